"""Diverse Score Distillation (Xu et al. 2024), as BillyXYB/Diverse-Score-Distillation
`stable_diffusion_dsd_guidance.py::compute_grad_dsd` with `configs/dsd.yaml`.

Each run follows the DDIM (ODE) generation path of its own fixed seed latent z_T (drawn once from
`config.seed`, in the prior's latent shape, shared by the views of a batch):
1. t is annealed deterministically: t% = 0.98 - (0.98 - 0.32) sqrt(step / N);
2. t_D = t + floor(U * clamp(0.1 (t - t_min), 0, T - 1 - t)), clamped to [delta_min, T - 1]
   (delta_min = 1, and 10 once the (sqrt) progress exceeds 0.75);
3. DDIM (eta = 0, CFG s_path; the reference: s_path = s) from z_T over the grid linspace(T - 1, 0, n_ddim + 1)
   points above t_D, then to t_D, giving x_path (x_path = z_T when t_D = T - 1);
4. eps_D* = eps_hat^{s_path}(x_path, t_D);
5. re-noise the current render with it: x'_D = alpha_D y + sigma_D eps_D*, x_t = alpha_t y + sigma_t eps_D*;
6. eps_D = eps_hat^{s_D}(x'_D, t_D), eps_t = eps_hat^s(x_t, t);
7. g = (1 - abar_t) (eps_t - eps_D).
Cost: (grid points above t_D, <= n_ddim) + 3 CFG evaluations, i.e. <= 2 (n_ddim + 3) items (26 with
the reference's 10 steps, 52 with Perp-Neg). The path's states at the grid points depend only on z_T, the text and s_path,
not on the render, so they are computed once per (text, scale) and cached; a step then costs one DDIM
step from the last grid point above t_D, plus the 3 evaluations: 2 x 4 = 8 items (the same path
and gradient as without the cache).
Perp-Neg's view-interpolated texts change with every camera, so with Perp-Neg the path is not cached.

Reference: "Diverse Score Distillation", Xu, Srinivasa, Liu, Tulsiani, 2024, arXiv:2412.06780.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .base import Guidance, GuidanceOutput, clip_gradient, images_from_render, target_trick_loss
from .ddim import prior_ddim_step, prior_latent_shape, timestep_groups
from .perp_neg import PerpNegPrompts, guided_eps, perp_neg_prompts
from .priors.prior import DiffusionPrior, TextEmbedding
from .schedules import Scheduled, TimestepConfig, TimestepSchedule, scheduled_value


@dataclass
class DSDConfig:
    # dsd.yaml: 7.5 with use_perp_neg, whose threestudio branch is diffusers-form (its plain branch is
    # threestudio-form: 8.5 here). The eps_D evaluation uses "scale 1": the conditional prediction on the
    # perp-neg branch (1.0 here); on the plain threestudio branch it would be 2 eps_c - eps_u (2.0 here).
    guidance_scale: Scheduled = 7.5
    delta_guidance_scale: float = 1.0
    # CFG of the DDIM path from z_T and of its noise eps_D* (None: guidance_scale, the reference's 7.5 over
    # 10 steps): 1.2 over 50 steps is the embedded prior's own sampling recipe, whose path ends on an
    # object where 7.5 ends on texture
    # (docs/notes/2026-12-05-guidance-probes.md#dsds-path-its-regularisers-and-sdis-inversion).
    path_guidance_scale: Scheduled | None = 1.2
    n_ddim_steps: int = 50
    timesteps: TimestepConfig = field(default_factory=lambda: TimestepConfig(
        kind="sqrt_anneal", min_step_percent=0.32, max_step_percent=0.98))
    plus_ratio: float = 0.1
    delta_min: int = 1
    delta_min_late: int = 10  # once progress (sqrt progress under sqrt_anneal) exceeds late_progress
    late_progress: float = 0.75
    perp_neg: bool = False  # dsd.yaml: true (needs view-dependent prompts; doubles the cost)
    grad_clip: Scheduled | None = None
    seed: int | None = None  # z_T = randn(latent shape) from this seed; None: the run's seed (0 alone)
    lr_scale: float = 1.0  # factor on the representation's learning rates, as CSD's
    # Floater regularisers on the render's alpha (`Guidance.alpha_regularizer_loss`), as the reference
    # system's lambda_sparsity and lambda_opaque: DSD has no fresh-noise term to clear the initial cloud
    # (docs/notes/2026-12-04-ddim-clip.md#dsd-with-alpha-regularisers); sparsity is off because it only
    # trades oversized objects for shrunken ones
    # (docs/notes/2026-12-05-guidance-probes.md#dsds-alpha-sparsity-on-the-large-prompts).
    alpha_sparsity: Scheduled = 0.0
    alpha_entropy: Scheduled = 0.2
    # Weight on the representation's `color_smoothness_loss` (Gaussians: RGB pulled towards the 8 nearest
    # neighbours'), as CDS's: DSD's fixed-noise update barely removes colour noise, and 2 clears the speckle
    # where CDS's 12.5 averages objects into grey blobs
    # (docs/notes/2026-12-05-guidance-probes.md#why-the-fixed-noise-variants-end-speckled-and-colour-smoothness-for-cds).
    color_smoothness: Scheduled = 2.0


class DSD(Guidance):
    name = "dsd"

    def __init__(self, prior: DiffusionPrior, config: DSDConfig | None = None, total_steps: int = 1000):
        super().__init__(prior, total_steps)
        self.config = config or DSDConfig()
        self.schedule = TimestepSchedule(self.config.timesteps, prior.num_train_timesteps, total_steps)
        T = prior.num_train_timesteps
        self.min_step = int(T * scheduled_value(self.config.timesteps.min_step_percent, 0))
        self.grid = torch.linspace(T - 1, 0, self.config.n_ddim_steps + 1).long().clamp(max=T - 1).tolist()
        generator = torch.Generator().manual_seed(0 if self.config.seed is None else self.config.seed)
        self.z_T = torch.randn((1, *prior_latent_shape(prior)), generator=generator).to(prior.device)
        self._grid_states: dict[tuple, list[torch.Tensor]] = {}  # (scale, text) -> path at grid[0], grid[1], ...

    def unet_evals_per_step(self) -> int:
        """Per view and step, once the grid states of the view's text are cached (without Perp-Neg)."""
        return 4 * (self.config.n_ddim_steps + 3) if self.config.perp_neg else 2 * (1 + 3)

    def path_scale(self, step: int) -> float:
        scale = self.config.path_guidance_scale
        return scheduled_value(self.config.guidance_scale if scale is None else scale, step)

    def state_dict(self) -> dict:
        return {"z_T": self.z_T.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.z_T = state["z_T"].to(self.prior.device).clone()
        self._grid_states.clear()

    def _grid_state(self, k: int, cond: TextEmbedding, uncond: TextEmbedding, scale: float) -> torch.Tensor:
        """The DDIM path from z_T [1, ...] at grid point `grid[k]` for one text (cond, uncond of length 1).
        Paths are cached per text; with a camera-conditioned prior every view's camera is new, so the
        path is walked afresh (k more UNet evaluations) and not kept."""
        key = (scale, _text_key(cond), _text_key(uncond))
        states = self._grid_states.setdefault(key, [self.z_T]) if cond.camera is None else [self.z_T]
        while len(states) <= k:
            cur, nxt = self.grid[len(states) - 1], self.grid[len(states)]
            x = states[-1]
            tt = torch.full((1,), cur, dtype=torch.long, device=x.device)
            eps = guided_eps(self.prior, x, tt, cond, uncond, scale)
            states.append(prior_ddim_step(self.prior, x, eps, cur, nxt))
        return states[k]

    def delta_min(self, step: int) -> int:
        progress = min(step / self.total_steps, 1.0)
        if self.config.timesteps.kind == "sqrt_anneal":
            progress = math.sqrt(progress)
        return self.config.delta_min_late if progress > self.config.late_progress else self.config.delta_min

    def delta_timesteps(self, t: torch.Tensor, step: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """t_D [B] = t + floor(U * clamp(plus_ratio (t - t_min), 0, T - 1 - t)), clamped to [delta_min, T - 1]."""
        T = self.prior.num_train_timesteps
        plus = (self.config.plus_ratio * (t - self.min_step).float()).clamp(min=0)
        plus = torch.minimum(plus, (T - 1 - t).float())
        plus = plus * torch.rand(t.shape, generator=generator).to(plus.device)
        return (t + plus.long()).clamp(self.delta_min(step), T - 1)

    @torch.no_grad()
    def ode_path(self, t_delta: int, cond: TextEmbedding, uncond: TextEmbedding, step: int,
                 perp: PerpNegPrompts | None = None) -> torch.Tensor:
        """DDIM from z_T over the grid points above t_delta, then to t_delta -> x_path [B, ...]."""
        above = [v for v in self.grid if v > t_delta]
        x = self.z_T.expand(len(cond), *self.z_T.shape[1:])
        if not above:  # t_delta = T - 1: no ODE step, the path point is z_T
            return x
        scale = self.path_scale(step)
        if perp is None:  # the grid states, cached per text
            x = torch.cat([self._grid_state(len(above) - 1, cond[i:i + 1], uncond[i:i + 1], scale)
                           for i in range(len(cond))])
        else:
            for cur, nxt in zip(above[:-1], above[1:]):
                tt = torch.full((x.shape[0],), cur, dtype=torch.long, device=x.device)
                eps = guided_eps(self.prior, x, tt, cond, uncond, scale, perp)
                x = prior_ddim_step(self.prior, x, eps, cur, nxt)
        tt = torch.full((x.shape[0],), above[-1], dtype=torch.long, device=x.device)
        eps = guided_eps(self.prior, x, tt, cond, uncond, scale, perp)
        return prior_ddim_step(self.prior, x, eps, above[-1], t_delta)

    def gradient(self, y: torch.Tensor, t: torch.Tensor, t_delta: torch.Tensor, cond: TextEmbedding,
                 uncond: TextEmbedding, step: int, perp: PerpNegPrompts | None = None) -> torch.Tensor:
        """g [B, ...] for latents y (not differentiated) and timesteps t, t_delta [B]; no randomness."""
        y = y.detach()
        scale, path_scale = scheduled_value(self.config.guidance_scale, step), self.path_scale(step)
        eps_star = torch.empty_like(y)
        for value, idx in timestep_groups(t_delta):
            idx = idx.to(y.device)
            sub_perp = None if perp is None else perp[idx]
            x_path = self.ode_path(value, cond[idx], uncond[idx], step, sub_perp)
            eps_star[idx] = guided_eps(self.prior, x_path, t_delta[idx], cond[idx], uncond[idx], path_scale, sub_perp)
        eps_delta = guided_eps(self.prior, self.prior.add_noise(y, eps_star, t_delta), t_delta, cond, uncond,
                               self.config.delta_guidance_scale, perp)
        eps_t = guided_eps(self.prior, self.prior.add_noise(y, eps_star, t), t, cond, uncond, scale, perp)
        _, sigma = self.prior.alpha_sigma(t, y.ndim)
        clip = None if self.config.grad_clip is None else scheduled_value(self.config.grad_clip, step)
        return clip_gradient(sigma**2 * (eps_t - eps_delta), clip)

    def __call__(self, render, prompts, cameras, step: int, generator: torch.Generator | None = None) -> GuidanceOutput:
        y = self.prior.encode_images(images_from_render(render.rgb))
        t = self.schedule.sample(step, y.shape[0], generator).to(y.device)
        t_delta = self.delta_timesteps(t, step, generator)
        perp = perp_neg_prompts(self.prior, prompts, cameras) if self.config.perp_neg else None
        grad = self.gradient(y, t, t_delta, prompts.cond, prompts.uncond, step, perp)
        return GuidanceOutput(loss=target_trick_loss(y, grad),
                              logs={"t": t.float().mean().item(), "t_delta": t_delta.float().mean().item(),
                                    "grad_norm": grad.norm().item()})


def _text_key(text: TextEmbedding) -> tuple:
    """Hashable identity of one encoded text (its hidden states and mask, bytewise)."""
    mask = None if text.mask is None else text.mask.detach().cpu().numpy().tobytes()
    return text.hidden.detach().cpu().numpy().tobytes(), mask
