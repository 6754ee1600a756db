"""Renders of micro-world objects converted to Gaussians, with per-pixel part labels: what a part
teacher is shown when it is distilled into an asset made of Gaussians (flat colours, ragged edges,
speckle), which the shaded mesh renders of `sds3d.world.part_dataset` do not look like.

Each chunk of samples of one (kind, colour) pair is one object as `part_gaussians` with a
log-uniform count of Gaussians in `COUNT_RANGE`, every Gaussian knowing its part. Cameras are drawn
as `sds3d.features.distill.distillation_cameras` places them (`cameras_around`: 40-degree field of
view, the points' 98th-percentile sphere filling 90% of the view, here times a factor in
`DISTANCE_RANGE`), with
uniform azimuths and elevations in `ELEVATION_RANGE`. Views are rasterized at 2R x 2R with each
part's one-hot as extra channels and reduced to R x R as the teacher reduces its input
(antialiased bilinear). A pixel's label is the part of largest rendered weight, or the background
where the coverage is below one half. The result is a `PartDataset` (global part labels).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from sds3d.cameras import Cameras

from .dataset import balanced_pairs, render_by_pair
from .part_dataset import PART_RESOLUTION, PartDataset, part_label, part_names

COUNT_RANGE = (2000, 20000)
ELEVATION_RANGE = (-10.0, 50.0)
DISTANCE_RANGE = (0.9, 1.3)
FOVY = 40.0


def splat_part_views(gaussians, parts: torch.Tensor, labels: torch.Tensor, cameras: Cameras,
                     resolution: int) -> dict[str, torch.Tensor]:
    """Gaussians with part indices `parts` [N] (into `labels`, the global labels [P]) seen by
    `cameras` (any size) -> rgb [B, 3, R, R] over white, alpha [B, 1, R, R], labels [B, R, R] int64."""
    from sds3d.cuda.gaussian_rasterizer import rasterize_gaussians

    g, c = gaussians, gaussians.config
    onehot = F.one_hot(parts, len(labels)).float()[None].expand(len(cameras), -1, -1)
    with torch.no_grad():
        render, alpha, _ = rasterize_gaussians(
            g.means, g.quats, g.scales, g.opacities, torch.cat([g.colors(cameras), onehot], -1),
            cameras.viewmats, cameras.Ks, cameras.width, cameras.height, render_mode="RGB",
            rasterize_mode=c.rasterize_mode, eps2d=c.eps2d, backend=c.backend)
    full = torch.cat([render[..., :3] + (1 - alpha), alpha, render[..., 3:]], -1).permute(0, 3, 1, 2)
    small = F.interpolate(full, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    rgb, alpha, weights = small[:, :3].clamp(0, 1), small[:, 3:4].clamp(0, 1), small[:, 4:]
    pixel_labels = torch.where(alpha[:, 0] >= 0.5, labels[weights.argmax(1)], torch.zeros((), dtype=torch.long))
    return {"rgb": rgb, "alpha": alpha, "labels": pixel_labels}


def render_splat_part_dataset(n: int, seed: int, resolution: int = PART_RESOLUTION, progress: bool = False,
                              chunk: int = 32) -> PartDataset:
    """n labelled renders of Gaussian objects, deterministic for `seed`, (kind, colour) pairs
    balanced as in `sds3d.world.part_dataset.render_part_dataset`."""
    from sds3d.features.distill import cameras_around
    from sds3d.features.part_oracle import part_gaussians

    from . import COLORS, KINDS

    kinds, colors = list(KINDS), list(COLORS)
    rng = np.random.default_rng(seed)
    kind_idx, color_idx = balanced_pairs(n, rng, kinds, colors, kinds, colors)
    elevation = rng.uniform(*ELEVATION_RANGE, n)
    azimuth = rng.uniform(-180.0, 180.0, n)
    distance = rng.uniform(*DISTANCE_RANGE, n)
    R = resolution
    images = torch.empty(n, 3, R, R, dtype=torch.uint8)
    alpha = torch.empty(n, 1, R, R, dtype=torch.uint8)
    labels = torch.empty(n, R, R, dtype=torch.uint8)
    radius = torch.empty(n)

    def render(k: int, c: int, idx: np.ndarray) -> None:
        count = int(round(math.exp(rng.uniform(math.log(COUNT_RANGE[0]), math.log(COUNT_RANGE[1])))))
        gaussians, parts = part_gaussians(kinds[k], colors[c], count, seed=int(rng.integers(2**31)))
        global_labels = torch.tensor([part_label(kinds[k], part) for part in KINDS[kinds[k]].parts])
        cameras = cameras_around(gaussians.means, elevation[idx], azimuth[idx], 2 * R, FOVY, distance[idx])
        out = splat_part_views(gaussians, parts, global_labels, cameras, R)
        where = torch.as_tensor(idx)
        images[where] = (out["rgb"] * 255.0).round().to(torch.uint8)
        alpha[where] = (out["alpha"] * 255.0).round().to(torch.uint8)
        labels[where] = out["labels"].to(torch.uint8)
        radius[where] = cameras.radius

    render_by_pair(kind_idx, color_idx, render, chunk, f"render Gaussian parts seed {seed}", progress)
    as_float = lambda values: torch.as_tensor(values, dtype=torch.float32)  # noqa: E731
    return PartDataset(images=images, alpha=alpha, labels=labels, kind=torch.as_tensor(kind_idx),
                       color=torch.as_tensor(color_idx), elevation=as_float(elevation), azimuth=as_float(azimuth),
                       radius=radius, fovy=torch.full((n,), FOVY), parts=list(part_names()), kinds=kinds,
                       colors=colors, seed=seed)
