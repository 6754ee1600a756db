"""Noise-Free Score Distillation (Katzir et al., ICLR'24) (paper-level: no official
code was found; source: the paper and orenkatzir.github.io/nfsd).

g = w(t) (delta_D + s delta_C), x_t = alpha_t y + sigma_t eps, with no "- eps" term:
  delta_C = eps(x_t; y) - eps(x_t; null)
  delta_D = eps(x_t; null)                          if t < 200
          = eps(x_t; null) - eps(x_t; p_neg)        otherwise
`null` is `prompts.uncond` (the empty prompt); p_neg is `config.negative_prompt`, encoded with the
prior. For t < 200, g = w eps_hat^s (diffusers CFG), i.e. SDS(s) + w eps. Cost: 3 (cond, null, neg).

Reference: "Noise-Free Score Distillation", Katzir, Patashnik, Cohen-Or, Lischinski, 2023,
arXiv:2310.17590.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import NoisedRenderGuidance, clip_gradient
from .ddim import expand_text
from .priors.prior import DiffusionPrior, TextEmbedding
from .schedules import Scheduled, TimestepConfig, TimestepSchedule, scheduled_value
from .sds import sds_weight

NFSD_NEGATIVE_PROMPT = ("unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, "
                        "low-resolution, gloomy")


@dataclass
class NFSDConfig:
    guidance_scale: Scheduled = 7.5  # s on delta_C; at t < 200 this is exactly diffusers-form CFG s
    negative_prompt: str = NFSD_NEGATIVE_PROMPT
    small_t: int = 200  # delta_D = eps(null) below this timestep (paper-level constant)
    weighting: str = "sds"  # w(t) as in SDS (paper-level; the paper leaves w unspecified)
    timesteps: TimestepConfig = field(default_factory=TimestepConfig)  # U[0.02, 0.98] (paper-level)
    grad_clip: Scheduled | None = None


class NFSD(NoisedRenderGuidance):
    name = "nfsd"

    def __init__(self, prior: DiffusionPrior, config: NFSDConfig | None = None, total_steps: int = 1000):
        super().__init__(prior, total_steps)
        self.config = config or NFSDConfig()
        sds_weight(self.config.weighting, torch.ones(1), torch.ones(1))
        self.schedule = TimestepSchedule(self.config.timesteps, prior.num_train_timesteps, total_steps)
        self.negative = prior.encode_prompts([self.config.negative_prompt])

    def unet_evals_per_step(self) -> int:
        return 3

    def gradient(self, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, cond: TextEmbedding,
                 uncond: TextEmbedding, step: int, negative: TextEmbedding | None = None) -> torch.Tensor:
        """g [B, ...] for latents y (not differentiated), timesteps t [B] and noise eps."""
        batch = y.shape[0]
        negative = expand_text(self.negative if negative is None else negative, batch, cond.camera)
        x_t = self.prior.add_noise(y.detach(), noise, t)
        with torch.no_grad():
            eps = self.prior.predict_noise(torch.cat([x_t] * 3), torch.cat([t] * 3),
                                           TextEmbedding.cat([cond, uncond, negative]))
        eps_cond, eps_null, eps_neg = eps.chunk(3)
        delta_c = eps_cond - eps_null
        small = (t.to(y.device) < self.config.small_t).reshape(-1, *([1] * (y.ndim - 1)))
        delta_d = torch.where(small, eps_null, eps_null - eps_neg)
        alpha, sigma = self.prior.alpha_sigma(t, y.ndim)
        scale = scheduled_value(self.config.guidance_scale, step)
        grad = sds_weight(self.config.weighting, alpha, sigma) * (delta_d + scale * delta_c)
        clip = None if self.config.grad_clip is None else scheduled_value(self.config.grad_clip, step)
        return clip_gradient(grad, clip)
