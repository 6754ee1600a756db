"""PyTorch reference twin of the native hash-grid encoding (the test oracle).

Same conventions as `csrc/hash_grid_math.h`: level l has `resolutions[l]` cells per axis; a point
x in [0, 1]^3 (clamped; the clamp passes gradients on [0, 1]) sits at p = x * R in cell
min(floor(p), R - 1); a corner vertex v maps to row `offsets[l] + v.x + (R+1) (v.y + (R+1) v.z)` on
dense levels and `offsets[l] + (v.x ^ v.y * 2654435761 ^ v.z * 805459861) mod T` on hashed ones
(T a power of two). Values are trilinear interpolations of the 8 corner rows; gradients (any order,
w.r.t. points and tables) come from autograd. Works in float32 or float64, on any device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

PRIME_Y = 2654435761
PRIME_Z = 805459861


def _corner_offsets(device) -> torch.Tensor:
    """[8, 3] int64: corner k is (k & 1, (k >> 1) & 1, (k >> 2) & 1)."""
    k = torch.arange(8, device=device)
    return torch.stack([k & 1, (k >> 1) & 1, (k >> 2) & 1], dim=-1)


def corner_rows_and_weights(points: torch.Tensor, resolutions: Sequence[int], offsets: Sequence[int],
                            hashed: Sequence[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """points [N, 3] -> (rows [N, L, 8] int64 into the packed table, weights [N, L, 8])."""
    x = points.clamp(0.0, 1.0)
    corners = _corner_offsets(points.device)  # [8, 3]
    rows, weights = [], []
    for level, resolution in enumerate(resolutions):
        p = x * resolution  # [N, 3]
        base = p.detach().floor().clamp(max=resolution - 1)
        frac = p - base  # [N, 3] in [0, 1], differentiable
        vertex = base.long()[:, None, :] + corners  # [N, 8, 3]
        size = offsets[level + 1] - offsets[level]
        if hashed[level]:
            row = (vertex[..., 0] ^ (vertex[..., 1] * PRIME_Y) ^ (vertex[..., 2] * PRIME_Z)) & (size - 1)
        else:
            side = resolution + 1
            row = vertex[..., 0] + side * (vertex[..., 1] + side * vertex[..., 2])
        rows.append(row + offsets[level])
        w = torch.where(corners.bool(), frac[:, None, :], 1.0 - frac[:, None, :])  # [N, 8, 3]
        weights.append(w[..., 0] * w[..., 1] * w[..., 2])
    return torch.stack(rows, dim=1), torch.stack(weights, dim=1)


def encode(points: torch.Tensor, tables: torch.Tensor, resolutions: Sequence[int], offsets: Sequence[int],
           hashed: Sequence[bool]) -> torch.Tensor:
    """points [N, 3] in [0, 1]^3, tables [P, F] (levels packed by `offsets` [L + 1]) -> [N, L * F]."""
    rows, weights = corner_rows_and_weights(points, resolutions, offsets, hashed)  # [N, L, 8]
    features = tables[rows]  # [N, L, 8, F]
    out = (weights[..., None].to(tables.dtype) * features).sum(dim=2)  # [N, L, F]
    return out.reshape(points.shape[0], len(resolutions) * tables.shape[1])


def points_vjp(grad_features: torch.Tensor, points: torch.Tensor, tables: torch.Tensor,
               resolutions: Sequence[int], offsets: Sequence[int], hashed: Sequence[bool]) -> torch.Tensor:
    """sum_j grad_features[n, j] * d encode(points)[n, j] / d points[n] -> [N, 3]; differentiable
    w.r.t. grad_features, tables and points (unless called under no_grad)."""
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        x = points if points.requires_grad else points.detach().requires_grad_(True)
        features = encode(x, tables, resolutions, offsets, hashed)
        (grad_points,) = torch.autograd.grad(features, x, grad_features, create_graph=create_graph)
    return grad_points
