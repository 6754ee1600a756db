"""Classifier Score Distillation (Yu et al. 2023), in the triple-guidance form of
CVMI-Lab/Classifier-Score-Distillation `stable_diffusion_triple_guidance.py`:

    g = w(t) [a eps(x_t; y) + b eps(x_t; y_neg) + c eps(x_t; null) + d eps],  w = 1 - abar_t,

with x_t = alpha_t y + sigma_t eps and scheduled a, b, c, d (`cond_scale`, `uncond_scale`,
`null_scale`, `noise_scale` there). Plain CSD, the default here, is (a, b, c, d) = (1, 0, -1, 0):
g = w (eps_c - eps_null).
`null` is `prompts.uncond` (the empty prompt); y_neg is `config.negative_prompt` encoded with the
prior. Cost: 3 (cond, neg, null), 2 when b is 0 throughout.

Reference: "Text-to-3D with Classifier Score Distillation", Yu, Guo, Li, Liang, Zhang, Qi, 2023,
arXiv:2310.19415.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import NoisedRenderGuidance, clip_gradient
from .ddim import expand_text
from .priors.prior import DiffusionPrior, TextEmbedding
from .schedules import Scheduled, TimestepConfig, TimestepSchedule, scheduled_value

CSD_NEGATIVE_PROMPT = "oversaturated color, ugly, tiling, low quality, noisy"


@dataclass
class CSDConfig:
    # Plain CSD (a, b, c, d) = (1, 0, -1, 0) over t in [0.02, 0.98], for generation from scratch: the
    # reference's Stable-Diffusion refinement recipe (`CSDConfig.sd_refine()`) starts from a coarse asset
    # and fails from scratch on the embedded prior (docs/notes/2026-11-22-guidance-probes.md#probes-on-one-prompt).
    cond_scale: Scheduled = 1.0  # a
    negative_scale: Scheduled = 0.0  # b, on eps(y_neg)
    null_scale: Scheduled = -1.0  # c, on eps(null)
    noise_scale: Scheduled = 0.0  # d, on eps
    negative_prompt: str = CSD_NEGATIVE_PROMPT
    timesteps: TimestepConfig = field(default_factory=TimestepConfig)  # U[0.02, 0.98]
    grad_clip: Scheduled | None = None
    # Factor on the representation's learning rates: CSD's gradient lacks SDS's (eps_u - eps) noise, so
    # under Adam the same learning rates take much larger effective steps and fill Gaussians with speckle
    # (docs/notes/2026-11-22-guidance-probes.md#csd-needs-smaller-steps).
    lr_scale: float = 0.25

    @classmethod
    def sd_refine(cls, **overrides) -> "CSDConfig":
        """configs/csd-sd-refine.yaml (schedules in absolute steps, as threestudio's): b -1 -> -0.5 and
        c 0 -> -0.5 over 10k steps, t in [0.02, 0.5]."""
        return cls(**{"negative_scale": (0, -1.0, -0.5, 10000), "null_scale": (0, 0.0, -0.5, 10000),
                      "timesteps": TimestepConfig(min_step_percent=0.02, max_step_percent=0.5), **overrides})


def _ever_nonzero(value: Scheduled) -> bool:
    return value != 0 if isinstance(value, (int, float)) else any(v != 0 for v in value[1:3])


class CSD(NoisedRenderGuidance):
    name = "csd"

    def __init__(self, prior: DiffusionPrior, config: CSDConfig | None = None, total_steps: int = 1000):
        super().__init__(prior, total_steps)
        self.config = config or CSDConfig()
        self.schedule = TimestepSchedule(self.config.timesteps, prior.num_train_timesteps, total_steps)
        self.negative = prior.encode_prompts([self.config.negative_prompt])

    def unet_evals_per_step(self) -> int:
        return 3 if _ever_nonzero(self.config.negative_scale) else 2

    def scales(self, step: int) -> tuple[float, float, float, float]:
        c = self.config
        return tuple(scheduled_value(v, step) for v in (c.cond_scale, c.negative_scale, c.null_scale, c.noise_scale))

    def gradient(self, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, cond: TextEmbedding,
                 uncond: TextEmbedding, step: int, negative: TextEmbedding | None = None) -> torch.Tensor:
        """g [B, ...] for latents y (not differentiated), timesteps t [B] and noise eps."""
        a, b, c, d = self.scales(step)
        negative = expand_text(self.negative if negative is None else negative, y.shape[0], cond.camera)
        x_t = self.prior.add_noise(y.detach(), noise, t)
        texts = [cond, uncond] + ([negative] if b != 0 else [])
        with torch.no_grad():
            eps = self.prior.predict_noise(torch.cat([x_t] * len(texts)), torch.cat([t] * len(texts)),
                                           TextEmbedding.cat(texts)).chunk(len(texts))
        combined = a * eps[0] + c * eps[1] + d * noise
        if b != 0:
            combined = combined + b * eps[2]
        alpha, sigma = self.prior.alpha_sigma(t, y.ndim)
        clip = None if self.config.grad_clip is None else scheduled_value(self.config.grad_clip, step)
        return clip_gradient(sigma**2 * combined, clip)
