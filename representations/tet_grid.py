"""Regular grids over the cube [-bound, bound]^3 and their tetrahedralisation (for DMTet).

Grid vertex (i, j, k) sits at -bound + spacing * (i, j, k) with spacing = 2 bound / resolution and
has index (i * (R + 1) + j) * (R + 1) + k (x slowest, R = resolution): the order of
`torch.meshgrid(..., indexing="ij")` and of the [R + 1]^3 volumes that marching cubes reads.
"""

from __future__ import annotations

from itertools import permutations

import torch


def grid_points(resolution: int, bound: float) -> torch.Tensor:
    """-> [(R + 1)^3, 3] float32 grid vertices in the order above."""
    axis = torch.linspace(-bound, bound, resolution + 1)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)


def cube_tetrahedra(resolution: int) -> torch.Tensor:
    """Tetrahedra [6 R^3, 4] int64 over the grid vertices: each cell is split into 6 tetrahedra
    around its diagonal from corner (0, 0, 0) to (1, 1, 1) (Kuhn / Freudenthal triangulation), one
    per axis order: corner, + step along the first axis, + the second, + the third. Every cell uses
    the same diagonal direction, so faces of neighbouring cells match (a conforming mesh). Vertex
    order gives every tetrahedron positive orientation, det[v1 - v0, v2 - v0, v3 - v0] > 0."""
    n = resolution + 1
    cells = torch.stack(torch.meshgrid(*(torch.arange(resolution),) * 3, indexing="ij"), -1).reshape(-1, 3)
    tets = []
    for order in permutations(range(3)):
        steps = torch.eye(3, dtype=torch.int64)[list(order)]
        corners = [cells, cells + steps[0], cells + steps[0] + steps[1], cells + 1]
        ids = [(c[:, 0] * n + c[:, 1]) * n + c[:, 2] for c in corners]
        if torch.linalg.det(steps.double()) < 0:  # odd axis order: swap two corners
            ids[1], ids[2] = ids[2], ids[1]
        tets.append(torch.stack(ids, -1))
    return torch.cat(tets)


__all__ = ["grid_points", "cube_tetrahedra"]
