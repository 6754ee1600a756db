"""Dense PyTorch reference twin of the native Gaussian rasterizer (the test oracle).

Same conventions and thresholds as `csrc/gaussian_raster.cpp`, but every pixel looks at every
Gaussian (no tiles), so it is simple to read and slow: O(views x pixels x Gaussians). Gradients
come from autograd. Works in float32 or float64 and on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
TRANSMITTANCE_MIN = 1e-4


def _quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """[N, 4] (w, x, y, z), any norm -> [N, 3, 3]."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)


def _project(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane=0.01,
             far_plane=1e10, eps2d=0.3):
    """EWA projection. Returns means2d [C, N, 2], conics [C, N, 3], depths [C, N], radii [C, N, 2]
    (int32, 0 where culled)."""
    M = _quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3]
    covars = M @ M.transpose(1, 2)
    R, t = viewmats[:, None, :3, :3], viewmats[:, None, :3, 3]  # [C, 1, 3, 3], [C, 1, 3]
    p = (R @ means[None, :, :, None])[..., 0] + t  # [C, N, 3]
    cov_cam = R @ covars[None] @ R.transpose(-1, -2)  # [C, N, 3, 3]
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    x, y, z_true = p.unbind(-1)
    in_range = (z_true >= near_plane) & (z_true <= far_plane)
    z = torch.where(in_range, z_true, torch.ones_like(z_true))  # keeps culled rows finite for autograd
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    xc = z * torch.maximum(torch.minimum(x / z, lim_x_pos), -lim_x_neg)
    yc = z * torch.maximum(torch.minimum(y / z, lim_y_pos), -lim_y_neg)
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * xc / z**2, zero, fy / z, -fy * yc / z**2], -1).reshape(*z.shape, 2, 3)
    cov2d = J @ cov_cam @ J.transpose(-1, -2)
    a, b, c = cov2d[..., 0, 0] + eps2d, cov2d[..., 0, 1], cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)
    with torch.no_grad():
        ratio = (opacities / ALPHA_MIN).clamp_min(1.0)
        extent_sigma = torch.sqrt(2 * torch.log(ratio)).expand_as(z)
        ex, ey = extent_sigma * a.sqrt(), extent_sigma * c.sqrt()
        mx, my = means2d.unbind(-1)
        visible = (in_range & (det > 0) & (extent_sigma > 0)
                   & (mx + ex > 0) & (mx - ex < width) & (my + ey > 0) & (my - ey < height))
        radii = torch.stack([ex.ceil(), ey.ceil()], dim=-1).nan_to_num(0.0)
        radii = (radii * visible[..., None]).to(torch.int32)
    keep = visible[..., None]
    return (torch.where(keep, means2d, 0.0), torch.where(keep, conics, 0.0), z_true, radii)


def antialiasing_compensation(conics: torch.Tensor, eps2d: float) -> torch.Tensor:
    """Mip-Splatting's opacity factor for the "antialiased" mode: sqrt(det(cov) / det(cov + eps2d I)),
    so the dilated splat keeps the footprint integral of the undilated one instead of growing a
    one-pixel rim. From the conic (inverse of the dilated covariance) alone:
    det(cov) / det(cov_blur) = 1 - eps2d tr(conic) + eps2d^2 det(conic). conics [C, N, 3] -> [C, N]."""
    a, b, c = conics.unbind(-1)
    ratio = 1 - eps2d * (a + c) + eps2d ** 2 * (a * c - b * b)
    return ratio.clamp_min(1e-12).sqrt()


def _composite_pixels(pixels, means2d, conics, colors, opacities, visible):
    """One camera, a chunk of pixels [P, 2]; Gaussians already depth-sorted. -> [P, D], [P]."""
    d = means2d[None] - pixels[:, None]  # [P, N, 2]
    sigma = 0.5 * (conics[:, 0] * d[..., 0] ** 2 + conics[:, 2] * d[..., 1] ** 2) + conics[:, 1] * d[..., 0] * d[..., 1]
    alpha = torch.clamp(opacities * torch.exp(-sigma), max=ALPHA_MAX)
    alpha = torch.where(visible & (sigma >= 0) & (alpha >= ALPHA_MIN), alpha, 0.0)
    with torch.no_grad():
        # Early termination: a Gaussian counts only while the transmittance after it stays above
        # the threshold (monotone, so everything behind the first failure is dropped too).
        contributes = torch.cumprod(1 - alpha, dim=1) > TRANSMITTANCE_MIN
    alpha = alpha * contributes
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], dim=1), dim=1)
    weights = alpha * trans
    return weights @ colors, 1 - trans[:, -1] * (1 - alpha[:, -1])


def _rasterize(means2d, conics, colors, opacities, radii, depths, width, height, budget=2**25):
    """Dense compositing. colors [C, N, D], opacities [C, N] -> render [C, H, W, D], alphas [C, H, W, 1].
    Pixels go in chunks of about `budget` pixel-Gaussian pairs; when a camera needs more than one
    chunk, each chunk is recomputed in backward (activation checkpointing) to bound memory."""
    ys, xs = torch.meshgrid(torch.arange(height, device=means2d.device, dtype=means2d.dtype) + 0.5,
                            torch.arange(width, device=means2d.device, dtype=means2d.dtype) + 0.5, indexing="ij")
    pixels = torch.stack([xs, ys], dim=-1).reshape(-1, 2)
    renders, alphas = [], []
    for c in range(means2d.shape[0]):
        order = torch.argsort(depths[c], stable=True)
        visible = (radii[c, order] > 0).all(-1)
        args = (means2d[c, order], conics[c, order], colors[c, order], opacities[c, order], visible)
        chunk = max(1, budget // max(means2d.shape[1], 1))
        if chunk >= pixels.shape[0]:
            parts = [_composite_pixels(pixels, *args)]
        else:
            parts = [checkpoint(_composite_pixels, pixels[s:s + chunk], *args, use_reentrant=False)
                     for s in range(0, pixels.shape[0], chunk)]
        renders.append(torch.cat([p[0] for p in parts]).reshape(height, width, -1))
        alphas.append(torch.cat([p[1] for p in parts]).reshape(height, width, 1))
    return torch.stack(renders), torch.stack(alphas)


def rasterize_reference(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                        near_plane=0.01, far_plane=1e10, eps2d=0.3, rasterize_mode="classic"):
    """Reference for `rasterize_gaussians(..., backend="reference")`. colors [N, D] or [C, N, D].
    Returns render [C, H, W, D], alphas [C, H, W, 1], (means2d, conics, depths, radii)."""
    means2d, conics, depths, radii = _project(means, quats, scales, opacities, viewmats, Ks, width, height,
                                              near_plane, far_plane, eps2d)
    if colors.dim() == 2:
        colors = colors.expand(viewmats.shape[0], *colors.shape)
    view_opacities = opacities.expand(viewmats.shape[0], -1)
    if rasterize_mode == "antialiased":
        view_opacities = view_opacities * antialiasing_compensation(conics, eps2d)
    render, alphas = _rasterize(means2d, conics, colors, view_opacities, radii, depths, width, height)
    return render, alphas, (means2d, conics, depths, radii)


__all__ = ["antialiasing_compensation", "rasterize_reference"]
