"""Gaussians that the training background hides ("white fog"), found and pruned at the end of a run.

On the white background of the embedded prior's training renders, SDS can leave Gaussians white and
opaque where the object should be empty (under a table's top, around a car): they cannot be seen, so
the prior's gradient on them is zero and nothing removes them, yet they fill silhouettes, show on a
dark background and end up in a mesh.

A Gaussian is hidden when (1) its colour, clamped to [0, 1] as renders are read, is within
`tolerance` of the background's in every view, and (2) removing every such Gaussian at once leaves
the pixels that carry its visible weight unchanged: at most `max_share` of its blending weight (the
sum over pixels and views of T_i alpha_i, read as the gradient of the render with respect to a
per-Gaussian colour) falls on pixels whose colour changes by more than `changed`. A white object's
Gaussians in front of its own shaded or coloured surface fail (2) and stay; Gaussians no view sees at
all (inside the object) carry no weight and are hidden. The defaults were chosen on the text-to-3D
suite's assets (BENCHMARKS.md, "White fog").
"""

from __future__ import annotations

import torch

from sds3d.cameras import Cameras, orbit_cameras
from sds3d.cuda.gaussian_rasterizer import rasterize_gaussians


def check_cameras(width: int = 96) -> Cameras:
    """36 orbit views over the prior's training range: azimuth every 30 degrees at elevation 0, 30, 60."""
    elevation = torch.tensor([0.0, 30.0, 60.0]).repeat_interleave(12)
    azimuth = torch.arange(12, dtype=torch.float32).repeat(3) * 30.0 - 180.0
    return orbit_cameras(elevation, azimuth, 2.5, 40.0, width)


def _rasterize(gaussians, cameras: Cameras, colours: torch.Tensor, keep: torch.Tensor | None = None):
    """Renders [C, H, W, K] of per-Gaussian channels `colours` [C, N, K] (a subset `keep` [N] bool); no
    gradient reaches the Gaussians."""
    tensors = [t.detach() for t in (gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities)]
    if keep is not None:
        tensors, colours = [t[keep] for t in tensors], colours[:, keep]
    render, alpha, _ = rasterize_gaussians(*tensors, colours, cameras.viewmats, cameras.Ks, cameras.width,
                                           cameras.height, rasterize_mode=gaussians.config.rasterize_mode,
                                           eps2d=gaussians.config.eps2d, backend=gaussians.config.backend,
                                           render_mode="RGB")
    return render, alpha


def hidden_gaussians(gaussians, background: torch.Tensor, cameras: Cameras | None = None,
                     tolerance: float = 0.05, changed: float = 0.05, max_share: float = 0.25) -> torch.Tensor:
    """[N] bool: the Gaussians that `background` ([3] RGB in [0, 1]) hides from `cameras`
    (default `check_cameras()`), by the two tests above."""
    cameras = (check_cameras() if cameras is None else cameras).to(gaussians.means.device)
    background = background.to(gaussians.means.device).reshape(1, 1, 3)
    with torch.no_grad():
        colours = gaussians.colors(cameras).clamp(0, 1)  # [C, N, 3]; renders are read clamped
        candidate = ((colours - background).abs().amax(-1) <= tolerance).all(0)
        if not candidate.any():
            return candidate

        def composite(keep=None):
            render, alpha = _rasterize(gaussians, cameras, colours, keep)
            return (render + (1 - alpha) * background).clamp(0, 1)

        difference = (composite() - composite(~candidate)).abs().amax(-1)  # [C, H, W]
    weights = torch.ones(len(cameras), len(gaussians), 2, device=gaussians.means.device, requires_grad=True)
    with torch.enable_grad():
        render, _ = _rasterize(gaussians, cameras, weights)
        (render[..., 0] * (difference > changed) + render[..., 1]).sum().backward()
    on_changed, visible = weights.grad.sum(0).unbind(-1)
    return candidate & (on_changed <= max_share * visible)
