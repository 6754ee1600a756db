"""Trajectory Score Matching (Dreamer XL, Miao et al. 2024), as xingy038/Dreamer-XL
`guidance/sd_utils.py::train_step` (and `train.py::_hook` for the optional pixel-wise clipping).

Like ISM (see `ism.py`), but from the same x_s two DDIM inversion paths start: x_s -> x_t (fed to the
CFG UNet) and x_s -> x_mu, mu = round(s + (t - s) sqrt(1 - gamma^2)); the target is eps_null(x_mu, mu):

    g = (sigma_t / alpha_t) (eps_hat^s(x_t, t) - eps_null(x_mu, mu)).

gamma = 1 gives mu = s and exactly ISM's g (x_mu = x_s, no extra evaluation). The reference uses
SDXL (added text/time ids), which the prior interface hides. Its cost is ISM + 2 (it re-evaluates
eps_null(x_s, s) and one unused step mu -> t); here ISM + 1.

Optional `pixel_grad_clip` (Dreamer-XL `clip_value` 0.05): a backward hook on the rendered image
rescales each pixel's gradient vector by min over channels of min(1, c / |dL/dI|), keeping its direction.

Reference: "Dreamer XL: Towards High-Resolution Text-to-3D Generation via Trajectory Score Matching",
Miao, Duan, Ojha, Song, Shah, Long, Ranjan, 2024, arXiv:2405.11252.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import images_from_render
from .ddim import prior_ddim_step
from .ism import ISM, ISMConfig


@dataclass
class TSMConfig(ISMConfig):
    gamma: float = 0.3
    pixel_grad_clip: float | None = None  # Dreamer-XL trains with 0.05


def pixelwise_clip(grad: torch.Tensor, clip_value: float, channel_dim: int = 1) -> torch.Tensor:
    """Dreamer-XL `_hook`: scale = min_c min(1, clip / |grad|) per pixel; grad * scale."""
    scale = (clip_value / grad.abs()).clamp(max=1.0)
    return grad * torch.amin(scale, dim=channel_dim, keepdim=True)


class TSM(ISM):
    name = "tsm"

    def __init__(self, prior, config: TSMConfig | None = None, total_steps: int = 1000):
        super().__init__(prior, config or TSMConfig(), total_steps)

    def unet_evals_per_step(self) -> int:
        return super().unet_evals_per_step() + (0 if self.config.sds or self.config.gamma == 1 else 1)

    def mu(self, s: int, t: int) -> int:
        ratio = torch.sqrt(1 - torch.tensor(self.config.gamma) ** 2)
        return int(torch.round(s + (t - s) * ratio).item())

    def target(self, x_s: torch.Tensor, eps_s: torch.Tensor, s: int, t: int,
               camera: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x_t, eps_s = super().target(x_s, eps_s, s, t)
        mu = self.mu(s, t)
        if mu == s:
            return x_t, eps_s
        x_mu = prior_ddim_step(self.prior, x_s, eps_s, s, mu)
        return x_t, self.null_eps(x_mu, mu, camera)

    def images(self, render) -> torch.Tensor:
        images = images_from_render(render.rgb)
        if self.config.pixel_grad_clip is not None and images.requires_grad:
            clip_value = self.config.pixel_grad_clip
            images.register_hook(lambda g: pixelwise_clip(g, clip_value))  # only this loss flows through `images`
        return images
