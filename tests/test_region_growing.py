"""Hysteresis selection on a k-nearest-neighbour graph (`sds3d.features.region_growing`)."""

from collections import deque

import numpy as np
import pytest
import torch

from sds3d.features.region_growing import grow_selection


def flood_fill(points: np.ndarray, scores: np.ndarray, threshold: float, low: float, k: int) -> np.ndarray:
    """Reference: breadth-first search from every seed over brute-force k-nearest-neighbour edges
    (either direction) between points above `low`."""
    n = len(points)
    distance = ((points[:, None] - points[None]) ** 2).sum(-1)
    nearest = np.argsort(distance, axis=1, kind="stable")[:, :k + 1]
    edges = [set() for _ in range(n)]
    for i in range(n):
        for j in nearest[i]:
            if scores[i] > low and scores[j] > low:
                edges[i].add(int(j))
                edges[int(j)].add(i)
    selected = scores > threshold
    queue = deque(np.nonzero(selected)[0].tolist())
    while queue:
        i = queue.popleft()
        for j in edges[i]:
            if not selected[j]:
                selected[j] = True
                queue.append(j)
    return selected


def test_a_weak_chain_joined_to_a_seed_is_selected_and_a_weak_island_is_not():
    i = torch.arange(10.0)
    x = torch.cat([i + 0.01 * i**2, 100 + i[:5]])  # a chain of 10 (each point nearest its predecessor), an island of 5
    points = torch.stack([x, torch.zeros_like(x), torch.zeros_like(x)], -1)
    scores = torch.full((15,), 0.3)
    scores[0], scores[6] = 0.9, 0.1  # one seed; the chain is broken at 6
    mask = grow_selection(points, scores, 0.5, 0.2, neighbours=1)
    assert mask.tolist() == [True] * 6 + [False] * 9
    assert grow_selection(points, scores, 0.5, 0.5).tolist() == (scores > 0.5).tolist()  # no growth
    assert not grow_selection(points, torch.full((15,), 0.4), 0.5, 0.2).any()  # no seed, nothing
    eligible = torch.ones(15, dtype=torch.bool)
    eligible[3] = False  # an ineligible point is never selected and breaks the chain
    assert grow_selection(points, scores, 0.5, 0.2, neighbours=1, eligible=eligible).tolist() == \
        [True] * 3 + [False] * 12


@pytest.mark.parametrize("seed", range(4))
def test_grow_selection_matches_a_breadth_first_flood_fill(seed):
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(300, 3, generator=generator)
    scores = torch.rand(300, generator=generator) ** 2
    for k in (3, 8):
        expected = flood_fill(points.double().numpy(), scores.numpy(), 0.5, 0.15, k)
        mask = grow_selection(points, scores, 0.5, 0.15, neighbours=k)
        assert mask.numpy().tolist() == expected.tolist()
        assert mask.sum() > (scores > 0.5).sum()  # it grew
