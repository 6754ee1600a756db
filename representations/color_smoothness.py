"""Colour smoothness for primitives with independent colours (Gaussians).

NeRF and mesh colours come from a hash-grid field, so nearby points share parameters and their colours
are smooth by construction. A Gaussian's colour is its own parameter. Guidance variants whose update
removes colour noise only weakly (the fixed-noise ones, CDS and DSD: `benchmarks/sharpness_probe.py
--perturbation speckle`) let random per-step pushes build up into speckle. This term supplies the
smoothness a field has: each primitive's colour is pulled towards those of its k nearest neighbours.
"""

from __future__ import annotations

import torch
from scipy.spatial import cKDTree


def nearest_neighbours(points: torch.Tensor, k: int) -> torch.Tensor:
    """points [N, 3] -> long indices [N, min(k, N - 1)] of each point's nearest other points (Euclidean;
    a k-d tree on the CPU, on the points' device)."""
    k = min(k, len(points) - 1)
    if k <= 0:
        return torch.empty(len(points), 0, dtype=torch.long, device=points.device)
    _, indices = cKDTree(points.detach().cpu().numpy()).query(points.detach().cpu().numpy(), k=k + 1)
    return torch.from_numpy(indices[:, 1:]).long().to(points.device)  # column 0: itself (or a duplicate)


def color_smoothness(colors: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """colors [N, C], neighbours [N, k] -> sum over primitives of the mean squared colour difference to
    their neighbours (a scalar; 0 for uniform colour or no neighbours). Summed, not averaged, so the pull
    on one primitive does not depend on how many there are."""
    if neighbours.shape[1] == 0:
        return colors.sum() * 0.0
    return (colors[:, None, :] - colors[neighbours]).pow(2).sum(-1).mean(-1).sum()
