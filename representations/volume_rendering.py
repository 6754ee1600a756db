"""Volume rendering along camera rays: ray generation, box clipping, stratified samples and the
emission-absorption quadrature (NeRF, Mildenhall et al. 2020):

    alpha_i = 1 - exp(-sigma_i delta_i),  T_i = prod_{j<i} (1 - alpha_j),  w_i = T_i alpha_i.

Samples are kept dense, [R, S] per ray; skipped samples simply have sigma = 0.
"""

from __future__ import annotations

import torch

from sds3d.cameras import Cameras


def camera_rays(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rays through the pixel centres (x + 0.5, y + 0.5). Returns origins [B, H, W, 3], unit world
    directions [B, H, W, 3] and z_per_t [B, H, W] (camera-space depth per unit distance along the ray)."""
    B, H, W = len(cameras), cameras.height, cameras.width
    device = cameras.viewmats.device
    ys, xs = torch.meshgrid(torch.arange(H, device=device, dtype=torch.float32) + 0.5,
                            torch.arange(W, device=device, dtype=torch.float32) + 0.5, indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)  # [H, W, 3]
    camera_dirs = torch.einsum("bij,hwj->bhwi", torch.linalg.inv(cameras.Ks.float()), pixels)
    norm = camera_dirs.norm(dim=-1, keepdim=True)
    camera_dirs = camera_dirs / norm  # unit, camera frame
    camtoworlds = cameras.camtoworlds.float()
    directions = torch.einsum("bij,bhwj->bhwi", camtoworlds[:, :3, :3], camera_dirs)
    origins = camtoworlds[:, None, None, :3, 3].expand(B, H, W, 3)
    return origins, directions, camera_dirs[..., 2]


def ray_box(origins: torch.Tensor, directions: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test against [-bound, bound]^3. origins, directions [R, 3] -> near, far [R] (near >= 0;
    near >= far when the ray misses the box)."""
    safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0, t1 = (-bound - origins) / safe, (bound - origins) / safe
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(dim=-1)
    return near, far


def stratified_samples(near: torch.Tensor, far: torch.Tensor, samples: int, jitter: bool,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """S samples per ray, one in each of S equal bins of [near, far] (random in the bin with
    `jitter`, else at its centre). near, far [R] -> t [R, S], delta [R, S] (the bin width)."""
    length = (far - near).clamp_min(0.0)
    bins = torch.arange(samples, device=near.device, dtype=near.dtype)
    offsets = torch.rand(near.shape[0], samples, generator=generator, device=near.device) if jitter else 0.5
    t = near[:, None] + (bins + offsets) * (length / samples)[:, None]
    return t, (length / samples)[:, None].expand(-1, samples)


def render_weights(sigmas: torch.Tensor, deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sigmas, deltas [R, S] (samples in front-to-back order) -> weights [R, S] (sum <= 1) and the
    transmittance in front of each sample [R, S]."""
    optical = sigmas * deltas
    alphas = 1.0 - torch.exp(-optical)
    transmittance = torch.exp(-torch.cumsum(torch.cat([torch.zeros_like(optical[:, :1]), optical[:, :-1]], -1), -1))
    return alphas * transmittance, transmittance
