"""Restricting an edit to a region of the asset (Distilled Feature Fields' masked editing).

A per-point selection m [N] (bool) is rendered as a soft mask s [B, H, W, 1] in [0, 1] with the
asset's own splat weights. The editing score then sees I' = s I + (1 - s) sg(I), so its gradient
reaches the render only through s; the complement is kept by a preservation loss on
I'' = (1 - s) I + s sg(I) against the source render. `freeze_unselected` additionally zeroes every
parameter gradient of unselected points, so they stay bit-identical under Adam.

Reference: "Decomposing NeRF for Editing via Feature Field Distillation", Kobayashi, Matsumoto,
Sitzmann, 2022, arXiv:2205.15585.
"""

from __future__ import annotations

import torch

from sds3d.cameras import Cameras
from sds3d.cuda.gaussian_rasterizer import rasterize_gaussians
from sds3d.errors import InputError


def restrict_to_region(rgb: torch.Tensor, soft_mask: torch.Tensor) -> torch.Tensor:
    """I' = s I + (1 - s) sg(I): the value of `rgb` [B, H, W, C], the gradient scaled by s [B, H, W, 1]."""
    return soft_mask * rgb + (1 - soft_mask) * rgb.detach()


def preservation_loss(rgb: torch.Tensor, source_rgb: torch.Tensor, soft_mask: torch.Tensor,
                      weight: float) -> torch.Tensor:
    """weight * sum((I'' - I_src)^2) / B with I'' = (1 - s) I + s sg(I): pulls the render back to the
    source outside the region (sum-reduced per view like the target trick, so `weight` is on the
    scale of the editing gradient; DFF uses 10 x MSE)."""
    kept = (1 - soft_mask) * rgb + soft_mask * rgb.detach()
    return weight * ((kept - source_rgb.detach()) ** 2).sum() / rgb.shape[0]


def check_point_mask(mask, count: int) -> torch.Tensor:
    """A per-point selection as a bool tensor [count]; InputError for another shape or an empty one."""
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool or mask.shape != (count,):
        raise InputError(f"region mask: expected a bool tensor of shape [{count}] (one entry per Gaussian), got "
                         f"{str(mask.dtype).replace('torch.', '')} {list(mask.shape)}")
    if not mask.any():
        raise InputError("region mask selects no Gaussian; select at least one or edit without a region")
    return mask


@torch.no_grad()
def render_point_mask(gaussians, cameras: Cameras, point_mask: torch.Tensor) -> torch.Tensor:
    """The selection rendered like colour: s [B, H, W, 1] = sum_i w_i m_i over the splats' blending
    weights, so s is 1 inside an opaque selected surface and 0 where only unselected points show."""
    cameras = cameras.to(gaussians.means.device)
    channel = point_mask.to(gaussians.means)[None, :, None].expand(len(cameras), -1, -1)
    render, _, _ = rasterize_gaussians(
        gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, channel, cameras.viewmats,
        cameras.Ks, cameras.width, cameras.height, render_mode="RGB", rasterize_mode=gaussians.config.rasterize_mode,
        eps2d=gaussians.config.eps2d, backend=gaussians.config.backend)
    return render[..., :1].clamp(0, 1)


def freeze_unselected(gaussians, point_mask: torch.Tensor) -> list:
    """Gradient hooks that zero every parameter row of unselected Gaussians; -> the hook handles
    (call `.remove()` on each to undo). Needs a fixed point count: no densification while they hold."""
    keep = point_mask.to(gaussians.means.device)
    handles = []
    for param in gaussians.params.values():
        if param.shape[0] != keep.shape[0] or param.numel() == 0:
            continue
        shape = (-1, *([1] * (param.ndim - 1)))
        handles.append(param.register_hook(lambda grad, shape=shape: torch.where(keep.reshape(shape), grad,
                                                                                  torch.zeros_like(grad))))
    return handles
