"""A feature field on 3D Gaussians: d latent channels per Gaussian, splatted with the same weights
as colour by the native rasterizer (any channel count), geometry detached, then decoded to the
teacher's width by the field's 1x1 decoder.

Reference: Feature 3DGS: Supercharging 3D Gaussian Splatting to Enable Distilled Feature Fields, arXiv:2312.03203
"""

from __future__ import annotations

import torch
from torch import nn

from sds3d.cameras import Cameras
from sds3d.cuda.gaussian_rasterizer import rasterize_gaussians
from sds3d.errors import InputError
from .field_base import FeatureField


class GaussianFeatureField(FeatureField):
    kind = "gaussians"
    learning_rate = 3e-4  # small: the lift has already placed the latents (see `distill`)

    def __init__(self, count: int, dim: int, latent_dim: int, teacher_name: str):
        """count Gaussians, each with a latent [latent_dim] (zeros until `lift` or optimisation)."""
        super().__init__(dim, latent_dim, teacher_name)
        self.latent = nn.Parameter(torch.zeros(count, latent_dim))

    def check_fits(self, representation) -> None:
        if len(representation) != self.latent.shape[0]:
            raise InputError(f"the feature field holds {self.latent.shape[0]} Gaussians but the asset has "
                             f"{len(representation)}; run `sds3d distill-features` again")

    def splat(self, representation, cameras: Cameras, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-Gaussian values [N, C] -> (alpha-weighted composite [B, H, W, C], alpha [B, H, W, 1]),
        with the Gaussians' geometry detached."""
        g, c = representation, representation.config
        cameras = cameras.to(g.means.device)
        render, alpha, _ = rasterize_gaussians(
            g.means.detach(), g.quats.detach(), g.scales.detach(), g.opacities.detach(), values,
            cameras.viewmats, cameras.Ks, cameras.width, cameras.height, render_mode="RGB",
            rasterize_mode=c.rasterize_mode, eps2d=c.eps2d, backend=c.backend)
        return render, alpha.detach()

    def render(self, representation, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        latent, alpha = self.splat(representation, cameras, self.latent)
        return self.decode_render(latent, alpha), alpha

    def points(self, representation) -> torch.Tensor:
        return representation.means.detach()

    def latents(self, representation) -> torch.Tensor:
        return self.latent

    def geometry_tensors(self, representation) -> list[torch.Tensor]:
        return [representation.means, representation.params["scales"], representation.params["quats"],
                representation.params["opacities"]]

    @torch.no_grad()
    def lift(self, representation, cameras: Cameras, targets: torch.Tensor) -> None:
        """Each Gaussian's latent := the mean of latent-space targets [V, h, w, d] over the pixels it
        reaches, weighted by its splat weights: sum_p w_i(p) t(p) / sum_p w_i(p) (zero if it reaches
        none). The weighted sums are the gradient of sum_p <render(p), t(p)> w.r.t. the latents."""
        n, d = self.latent.shape
        with torch.enable_grad():
            values = torch.zeros(n, d + 1, requires_grad=True)
            render, _ = self.splat(representation, cameras, values)
            target = torch.cat([targets, torch.ones_like(targets[..., :1])], -1)
            (grad,) = torch.autograd.grad((render * target).sum(), values)
        self.latent.copy_(grad[:, :d] / grad[:, d].clamp_min(1e-8)[:, None])


__all__ = ["GaussianFeatureField"]
