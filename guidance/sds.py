"""Score Distillation Sampling (DreamFusion), exactly as the paper defines it.

g = w(t) (eps_hat^s(x_t, t, y_view) - eps), with eps ~ N(0, I) fresh every step, x_t = alpha_t y +
sigma_t eps, CFG in the diffusers convention, and the target trick so that dL/dy = g / B.
Weightings w(t): "sds" = 1 - abar_t = sigma_t^2, "uniform" = 1, "fantasia3d" = alpha_t sigma_t^2.

Reference: "DreamFusion: Text-to-3D using 2D Diffusion", Poole, Jain, Barron, Mildenhall, 2022,
arXiv:2209.14988.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import NoisedRenderGuidance, clip_gradient
from .priors.prior import DiffusionPrior, guided_noise
from .schedules import Scheduled, TimestepConfig, TimestepSchedule, scheduled_value

WEIGHTINGS = ("sds", "uniform", "fantasia3d")


def sds_weight(kind: str, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    if kind == "sds":
        return sigma**2
    if kind == "uniform":
        return torch.ones_like(sigma)
    if kind == "fantasia3d":
        return alpha * sigma**2
    raise ValueError(f"unknown weighting {kind!r}; choose one of {', '.join(WEIGHTINGS)}")


@dataclass
class SDSConfig:
    guidance_scale: Scheduled = 20.0  # diffusers convention (threestudio's 100 would be 101 here); 20 suits
    # the embedded 32x32 prior (100, the usual SDS value for Stable Diffusion, over-saturates it)
    weighting: str = "sds"
    timesteps: TimestepConfig = field(default_factory=TimestepConfig)
    grad_clip: Scheduled | None = None  # elementwise clamp of g, e.g. [0, 2, 8, 1000]
    alpha_sparsity: Scheduled = 0.0  # floater regulariser on the render's alpha (`alpha_regularizer_loss`)
    alpha_entropy: Scheduled = 0.0


class SDS(NoisedRenderGuidance):
    name = "sds"

    def __init__(self, prior: DiffusionPrior, config: SDSConfig | None = None, total_steps: int = 1000):
        super().__init__(prior, total_steps)
        self.config = config or SDSConfig()
        sds_weight(self.config.weighting, torch.ones(1), torch.ones(1))  # validate early
        self.schedule = TimestepSchedule(self.config.timesteps, prior.num_train_timesteps, total_steps)

    def unet_evals_per_step(self) -> int:
        """UNet batch-item evaluations per view per step (each variant says its own; SDS = 2)."""
        return 2

    def gradient(self, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, cond, uncond, step: int) -> torch.Tensor:
        """g [B, c, h, w] for latents y (not differentiated), timesteps t [B] and noise eps."""
        x_t = self.prior.add_noise(y.detach(), noise, t)
        eps_hat, _, _ = guided_noise(self.prior, x_t, t, cond, uncond, scheduled_value(self.config.guidance_scale, step))
        alpha, sigma = self.prior.alpha_sigma(t, y.ndim)
        grad = sds_weight(self.config.weighting, alpha, sigma) * (eps_hat - noise)
        clip = None if self.config.grad_clip is None else scheduled_value(self.config.grad_clip, step)
        return clip_gradient(grad, clip)
