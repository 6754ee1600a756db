"""Interval Score Matching (LucidDreamer, Liang et al. 2024), as
EnVision-Research/LucidDreamer `guidance/sd_utils.py::train_step_perpneg` / `add_noise_with_cfg`
with the defaults of `arguments/__init__.py`:

1. s = max(t - delta_T, 0); start = max(s - xs_delta_t * xs_inv_steps, 0); x = alpha y + sigma eps at
   `start` (lightly noised, eps = N(0, I) + 0.1 N(0, I) per channel: LucidDreamer's offset noise);
2. deterministic unconditional DDIM inversion (eta = 0, the `inversion_prompt` "" embedding) in steps
   of xs_delta_t (at most xs_inv_steps) up to s, giving x_s;
3. eps_s = eps_null(x_s, s); one more DDIM inversion step x_s -> x_t with it;
4. g = (sigma_t / alpha_t) (eps_hat^s(x_t, t, y) - eps_s), CFG in the diffusers form (s = 7.5).
The `sds` switch skips the inversion (x_t = alpha_t y + sigma_t eps, target eps): SDS with w = sigma / alpha.
t ~ U{0.02 T, ..., t_max} with t_max shrinking 0.98 T -> 0.5 T over warmup_iter = 1500 steps; delta_T
anneals 100 -> 80 over the same steps; one t per batch, as the reference.
LucidDreamer indexes a 1000-step DDIM grid with steps_offset 1 (its timestep is index + 1) and scales
the loss by `lambda_guidance`; both are left out here (the loss weight belongs to the caller).
Cost: ceil(s / xs_delta_t) (<= xs_inv_steps) + 1 unconditional items + 2 (CFG; 4 with Perp-Neg).

Reference: "LucidDreamer: Towards High-Fidelity Text-to-3D Generation via Interval Score Matching",
Liang, Yang, Lin, Li, Xu, Chen, 2023, arXiv:2311.11284.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .base import Guidance, GuidanceOutput, clip_gradient, images_from_render, target_trick_loss
from .ddim import expand_text, prior_ddim_step, timestep_groups
from .perp_neg import PerpNegPrompts, guided_eps, perp_neg_prompts
from .priors.prior import DiffusionPrior, TextEmbedding
from .schedules import Scheduled, TimestepConfig, TimestepSchedule, scheduled_value


@dataclass
class ISMConfig:
    guidance_scale: Scheduled = 7.5  # diffusers form (LucidDreamer: uncond + s (cond - uncond))
    delta_t: Scheduled = (0, 100, 80, 1500)  # delta_T: 100 -> 80 over warmup_iter (rounded up)
    xs_delta_t: int = 200
    xs_inv_steps: int = 5
    inversion_prompt: str = ""  # `inverse_text`: the unconditional embedding of the inversion
    noise_offset: float = 0.1  # eps = N(0, I) + noise_offset * N(0, I) shared per channel
    sds: bool = False
    timesteps: TimestepConfig = field(default_factory=lambda: TimestepConfig(
        min_step_percent=0.02, max_step_percent=(0, 0.98, 0.5, 1500)))
    perp_neg: bool = False  # LucidDreamer's argument default is True (most of its configs set False)
    grad_clip: Scheduled | None = None


class ISM(Guidance):
    name = "ism"

    def __init__(self, prior: DiffusionPrior, config: ISMConfig | None = None, total_steps: int = 1000):
        super().__init__(prior, total_steps)
        self.config = config or ISMConfig()
        self.schedule = TimestepSchedule(self.config.timesteps, prior.num_train_timesteps, total_steps)
        self.null = prior.encode_prompts([self.config.inversion_prompt])

    def unet_evals_per_step(self) -> int:
        cfg = 4 if self.config.perp_neg else 2
        return cfg if self.config.sds else self.config.xs_inv_steps + 1 + cfg

    def delta_t(self, step: int) -> int:
        return int(math.ceil(scheduled_value(self.config.delta_t, step)))

    def null_eps(self, x: torch.Tensor, t: int, camera: torch.Tensor | None = None) -> torch.Tensor:
        """eps(x; inversion prompt) at level t; `camera` [B, D] for camera-conditioned priors."""
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        with torch.no_grad():
            return self.prior.predict_noise(x, tt, expand_text(self.null, x.shape[0], camera))

    @torch.no_grad()
    def invert_to(self, y: torch.Tensor, noise: torch.Tensor, s: int,
                  camera: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 1-3: (x_s, eps_null(x_s, s))."""
        c = self.config
        cur = max(s - c.xs_delta_t * c.xs_inv_steps, 0)
        x = self.prior.add_noise(y, noise, torch.full((y.shape[0],), cur, dtype=torch.long, device=y.device))
        for _ in range(c.xs_inv_steps):
            nxt = min(cur + c.xs_delta_t, s)
            x = prior_ddim_step(self.prior, x, self.null_eps(x, cur, camera), cur, nxt)
            cur = nxt
            if cur == s:
                break
        return x, self.null_eps(x, s, camera)

    def target(self, x_s: torch.Tensor, eps_s: torch.Tensor, s: int, t: int,
               camera: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, target eps): ISM steps x_s -> x_t with eps_s and targets eps_s (`camera`: the views'
        features, for subclasses that evaluate the prior again)."""
        x_t = prior_ddim_step(self.prior, x_s, eps_s, s, t)
        return x_t, eps_s

    def gradient(self, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, cond: TextEmbedding,
                 uncond: TextEmbedding, step: int, perp: PerpNegPrompts | None = None) -> torch.Tensor:
        """g [B, ...] for latents y (not differentiated), timesteps t [B] and noise eps."""
        y = y.detach()
        if self.config.sds:
            x_t, target = self.prior.add_noise(y, noise, t), noise
        else:
            x_t, target = torch.empty_like(y), torch.empty_like(y)
            for value, idx in timestep_groups(t):
                idx = idx.to(y.device)
                s = max(value - self.delta_t(step), 0)
                camera = None if cond.camera is None else cond.camera[idx]
                x_s, eps_s = self.invert_to(y[idx], noise[idx], s, camera)
                x_t[idx], target[idx] = self.target(x_s, eps_s, s, value, camera)
        eps_hat = guided_eps(self.prior, x_t, t, cond, uncond, scheduled_value(self.config.guidance_scale, step), perp)
        alpha, sigma = self.prior.alpha_sigma(t, y.ndim)
        grad = sigma / alpha * (eps_hat - target)
        clip = None if self.config.grad_clip is None else scheduled_value(self.config.grad_clip, step)
        return clip_gradient(grad, clip)

    def sample_noise(self, shape, generator: torch.Generator | None) -> torch.Tensor:
        noise = torch.randn(shape, generator=generator)
        if self.config.noise_offset:
            offset = torch.randn((1, shape[1], *([1] * (len(shape) - 2))), generator=generator)
            noise = noise + self.config.noise_offset * offset
        return noise

    def images(self, render) -> torch.Tensor:
        return images_from_render(render.rgb)

    def __call__(self, render, prompts, cameras, step: int, generator: torch.Generator | None = None) -> GuidanceOutput:
        y = self.prior.encode_images(self.images(render))
        t = self.schedule.sample(step, 1, generator).expand(y.shape[0]).to(y.device)  # one t per batch
        noise = self.sample_noise(y.shape, generator).to(y.device, y.dtype)
        perp = perp_neg_prompts(self.prior, prompts, cameras) if self.config.perp_neg else None
        grad = self.gradient(y, t, noise, prompts.cond, prompts.uncond, step, perp)
        return GuidanceOutput(loss=target_trick_loss(y, grad),
                              logs={"t": t.float().mean().item(), "grad_norm": grad.norm().item()})
