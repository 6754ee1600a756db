"""Consistency Distillation Sampling (Consistent3D, Wu et al. 2024), as
sail-sg/Consistent3D `stable_diffusion_guidance.py::compute_grad_consistency` (share_noise=True,
recon_std_rescale=0) with `configs/consistency-coarse.yaml`.

eps* ~ N(0, I) is drawn once at construction (one [c, h, w] buffer in the prior's latent shape, seeded
by `config.seed`) and reused for every view and step. In VE coordinates (sigma~ = sigma / alpha):
  z_t = y + sigma~_t eps*,  x_t = z_t / sqrt(1 + sigma~_t^2) (= alpha_t y + sigma_t eps*),
  eps_t = eps_hat^s(x_t, t),
  z_n = z_t + (sigma~_n - sigma~_t) eps_t   (PF-ODE Euler step = DDIM, eta = 0),
  x_n = z_n / sqrt(1 + sigma~_n^2),  eps_n = eps_hat^s(x_n, t_n),
  (with `prior.clip_sample_range` r, as the embedded prior's DDIM sampler, x0_hat = z_t - sigma~_t eps_t
  is clipped to [-r, r] in that step: z_n = clip(x0_hat) + sigma~_n eps_t; Stable Diffusion does not clip),
  g = w(t) (eps_t - eps_n)   (the reference writes target = y + w (eps_n - eps_t)), clamped to the clip.
t_n is sqrt-annealed 700 -> 100 over the run (clamped to [sigma_min, sigma_max - end_gap]) and
t = t_n + U{end_gap, ..., end_gap + perturb_factor - 1} (clamped to [sigma_min, sigma_max]).
No randomness inside `gradient`. Cost: 4 (two CFG evaluations).

Reference: "Consistent3D: Towards Consistent High-Fidelity Text-to-3D Generation with Deterministic
Sampling Prior", Wu, Zhou, Yi, Yuan, Zhang, 2024, arXiv:2401.09050.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import Guidance, GuidanceOutput, clip_gradient, images_from_render, target_trick_loss
from .ddim import prior_latent_shape
from .perp_neg import guided_eps
from .priors.prior import DiffusionPrior, TextEmbedding
from .schedules import Scheduled, TimestepConfig, TimestepSchedule, scheduled_value
from .sds import sds_weight


@dataclass
class CDSConfig:
    # threestudio form 100 -> 50 over 3000 steps in consistency-coarse.yaml; +1 in the diffusers form
    guidance_scale: Scheduled = (0, 101.0, 51.0, 3000)
    weighting: str = "uniform"  # refine stage: "sds"
    # t_n = cur_steps [0, 700, 100, 3000] with sqrt annealing (perturb_indices: sqrt), over the run
    t_n: TimestepConfig = field(default_factory=lambda: TimestepConfig(
        kind="sqrt_anneal", min_step_percent=0.1, max_step_percent=0.7))
    end_gap: int = 100
    perturb_factor: int = 200  # t - t_n in [end_gap, end_gap + perturb_factor)
    min_sigma_percent: float = 0.1
    max_sigma_percent: float = 0.98
    grad_clip: Scheduled | None = (0, 2.0, 8.0, 3000)
    seed: int | None = None  # eps* = randn(latent shape) from this seed; None: the run's seed (0 alone)
    # Factor on the representation's learning rates: with one fixed noise CDS's gradient lacks SDS's
    # fresh-noise term, so at x1 Adam's steps fill the frame with fog, as CSD's do
    # (docs/notes/2026-11-22-guidance-probes.md#cds-needs-smaller-steps-too).
    lr_scale: float = 0.25
    # Floater regularisers on the render's alpha (`Guidance.alpha_regularizer_loss`): the reference starts
    # from a NeRF density blob and has none, ours from random-coloured Gaussians whose floaters CDS's fixed
    # noise never clears; with colour smoothness on, 2 / 0.8 keeps the solids that 5 / 2 shrank
    # (docs/notes/2026-12-05-guidance-table.md#cds-in-the-table-the-floaters-of-the-initial-cloud).
    alpha_sparsity: Scheduled = 2.0
    alpha_entropy: Scheduled = 0.8
    # Weight on the representation's `color_smoothness_loss` (Gaussians: RGB differences to the 8 nearest
    # neighbours; NeRF and mesh colours are smooth fields and have none): CDS barely removes colour noise,
    # so Gaussians end speckled in every colour without it
    # (docs/notes/2026-12-05-guidance-probes.md#why-the-fixed-noise-variants-end-speckled-and-colour-smoothness-for-cds).
    color_smoothness: Scheduled = 12.5


class CDS(Guidance):
    name = "cds"

    def __init__(self, prior: DiffusionPrior, config: CDSConfig | None = None, total_steps: int = 1000):
        super().__init__(prior, total_steps)
        self.config = config or CDSConfig()
        sds_weight(self.config.weighting, torch.ones(1), torch.ones(1))
        self.schedule = TimestepSchedule(self.config.t_n, prior.num_train_timesteps, total_steps)
        T = prior.num_train_timesteps
        self.sigma_min = int(T * self.config.min_sigma_percent)
        self.sigma_max = int(T * self.config.max_sigma_percent)
        generator = torch.Generator().manual_seed(0 if self.config.seed is None else self.config.seed)
        self.noise = torch.randn(prior_latent_shape(prior), generator=generator).to(prior.device)

    def unet_evals_per_step(self) -> int:
        return 4

    def state_dict(self) -> dict:
        return {"noise": self.noise.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.noise = state["noise"].to(self.prior.device).clone()

    def timesteps(self, step: int, batch: int, generator: torch.Generator | None = None):
        """(t, t_n), each [batch]."""
        t_n = self.schedule.sample(step, batch).clamp(self.sigma_min, self.sigma_max - self.config.end_gap)
        c = self.config
        gap = torch.randint(c.end_gap, c.end_gap + c.perturb_factor, (batch,), generator=generator)
        return (t_n + gap).clamp(self.sigma_min, self.sigma_max), t_n

    def gradient(self, y: torch.Tensor, t: torch.Tensor, t_n: torch.Tensor, cond: TextEmbedding, uncond: TextEmbedding,
                 step: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        """g [B, ...] for latents y (not differentiated), timesteps t, t_n [B]; noise defaults to eps*."""
        y = y.detach()
        noise = self.noise.expand_as(y) if noise is None else noise
        scale = scheduled_value(self.config.guidance_scale, step)
        alpha_t, sigma_t = self.prior.alpha_sigma(t, y.ndim)
        alpha_n, sigma_n = self.prior.alpha_sigma(t_n, y.ndim)
        ve_t, ve_n = sigma_t / alpha_t, sigma_n / alpha_n
        z_t = y + ve_t * noise
        eps_t = guided_eps(self.prior, z_t / torch.sqrt(1 + ve_t**2), t, cond, uncond, scale)
        z_n = z_t + (ve_n - ve_t) * eps_t
        if self.prior.clip_sample_range is not None:  # the sampler's clip of x0_hat = z_t - ve_t eps_t
            x0 = z_t - ve_t * eps_t
            z_n = z_n + x0.clamp(-self.prior.clip_sample_range, self.prior.clip_sample_range) - x0
        eps_n = guided_eps(self.prior, z_n / torch.sqrt(1 + ve_n**2), t_n, cond, uncond, scale)
        grad = sds_weight(self.config.weighting, alpha_t, sigma_t) * (eps_t - eps_n)
        clip = None if self.config.grad_clip is None else scheduled_value(self.config.grad_clip, step)
        return clip_gradient(grad, clip)

    def __call__(self, render, prompts, cameras, step: int, generator: torch.Generator | None = None) -> GuidanceOutput:
        y = self.prior.encode_images(images_from_render(render.rgb))
        t, t_n = (v.to(y.device) for v in self.timesteps(step, y.shape[0], generator))
        grad = self.gradient(y, t, t_n, prompts.cond, prompts.uncond, step)
        return GuidanceOutput(loss=target_trick_loss(y, grad),
                              logs={"t": t.float().mean().item(), "t_n": t_n.float().mean().item(),
                                    "grad_norm": grad.norm().item()})
