"""Hysteresis selection in 3D: a confident core grown through its neighbours.

A per-point score thresholded at 0.5 keeps what the teacher is sure of, and the teacher is unsure
at the edges and on small parts (a robot's eyes, a snowman's nose, a mug's handle: precision near
1, recall 0.02-0.5 on the micro-world). As in Canny's edge detector, two thresholds: points above
`threshold` are the seeds; a point above `low` is selected too when a chain of such points, each
among the previous one's `neighbours` nearest, joins it to a seed. A weak score far from any seed,
say on another object, stays unselected, and a query with no seed selects nothing.

Reference: J. Canny, A Computational Approach to Edge Detection, IEEE TPAMI 8(6), 1986
(hysteresis thresholding)
"""

from __future__ import annotations

import numpy as np
import torch

NEIGHBOURS = 16  # the k of the k-nearest-neighbour graph that a selection grows through


def grow_selection(points: torch.Tensor, scores: torch.Tensor, threshold: float, low: float,
                   neighbours: int = NEIGHBOURS, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """points [N, 3], scores [N] -> [N] bool: the points above `low` connected to a point above
    `threshold` through the graph joining each point to its `neighbours` nearest points, where both
    ends are above `low`. `eligible` [N] bool: the only points that may be selected (default: all). With
    `low >= threshold` this is `scores > threshold`."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    eligible = torch.ones(len(scores), dtype=torch.bool) if eligible is None else eligible
    seeds, candidates = (scores > threshold) & eligible, (scores > low) & eligible
    if not seeds.any() or low >= threshold:
        return seeds
    index = torch.nonzero(eligible)[:, 0].numpy()
    where = points[index].detach().double().numpy()
    weak = candidates[index].numpy()
    rows = np.nonzero(weak)[0]  # only points above `low` have edges: only they are queried
    k = min(neighbours + 1, len(index))  # the nearest is the point itself
    nearest = cKDTree(where).query(where[rows], k=k, workers=torch.get_num_threads())[1]
    rows, cols = np.repeat(rows, k), np.asarray(nearest).reshape(-1)
    both = weak[cols]
    graph = coo_matrix((np.ones(int(both.sum()), dtype=np.int8), (rows[both], cols[both])), shape=(len(index),) * 2)
    _, component = connected_components(graph, directed=False)
    seeded = np.unique(component[seeds[index].numpy()])
    out = torch.zeros_like(seeds)
    out[torch.as_tensor(index[np.isin(component, seeded) & weak])] = True
    return out


__all__ = ["NEIGHBOURS", "grow_selection"]
