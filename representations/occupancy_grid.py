"""Occupancy grid for empty-space skipping (as in Instant-NGP): a coarse voxel grid over the box
[-bound, bound]^3 holding a running maximum of the density, from which a boolean mask of cells
worth sampling is derived. Samples in empty cells are skipped by the renderer.

`update(density_fn)` evaluates the density at one random point per cell and keeps
max(decay * old, new); cells above the threshold, dilated by one cell so that the shape can grow
into its neighbourhood, are occupied.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class OccupancyGrid(nn.Module):
    def __init__(self, resolution: int = 64, bound: float = 1.0, density_threshold: float = 0.2, decay: float = 0.95):
        super().__init__()
        self.resolution, self.bound = resolution, bound
        self.density_threshold, self.decay = density_threshold, decay
        self.register_buffer("density", torch.zeros(resolution, resolution, resolution))  # [R, R, R] (x, y, z)
        self.register_buffer("occupied", torch.ones(resolution, resolution, resolution, dtype=torch.bool))

    def cell_points(self, jitter: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """One world point per cell [R^3, 3] (x-major like `density`): random in the cell or its centre."""
        R, device = self.resolution, self.density.device
        idx = torch.stack(torch.meshgrid(*(torch.arange(R, device=device),) * 3, indexing="ij"), dim=-1).reshape(-1, 3)
        offset = torch.rand(idx.shape, generator=generator, device=device) if jitter else 0.5
        return ((idx + offset) / R * 2 - 1) * self.bound

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor], generator: torch.Generator | None = None,
               reset: bool = False, jitter: bool = True) -> None:
        """density_fn: world points [N, 3] -> density [N], evaluated at one point per cell (random in
        the cell with `jitter`, else its centre). `reset` drops the running maximum."""
        new = density_fn(self.cell_points(jitter, generator)).reshape(self.density.shape)
        self.density.copy_(new if reset else torch.maximum(self.density * self.decay, new))
        above = (self.density > self.density_threshold).float()[None, None]
        self.occupied.copy_(F.max_pool3d(above, kernel_size=3, stride=1, padding=1)[0, 0] > 0)

    def query(self, points: torch.Tensor) -> torch.Tensor:
        """points [..., 3] world -> [...] bool: inside the box and in an occupied cell."""
        u = (points / self.bound + 1) / 2  # [0, 1]^3 inside the box
        inside = ((u >= 0) & (u <= 1)).all(dim=-1)
        idx = (u * self.resolution).long().clamp(0, self.resolution - 1)
        return inside & self.occupied[idx[..., 0], idx[..., 1], idx[..., 2]]

    @property
    def occupancy(self) -> float:
        """Fraction of occupied cells."""
        return self.occupied.float().mean().item()
