"""Colour smoothness for Gaussians: exact neighbours, the analytic value, its pull, and its upkeep in a run."""

import pytest
import torch

from sds3d.representations import Gaussians, GaussiansConfig
from sds3d.representations.color_smoothness import color_smoothness, nearest_neighbours
from sds3d.representations.spherical_harmonics import C0


@pytest.mark.parametrize("n, k", [(1, 8), (5, 8), (300, 8), (300, 3)])
def test_nearest_neighbours_match_brute_force(n, k):
    points = torch.rand(n, 3, generator=torch.Generator().manual_seed(n + k))
    found = nearest_neighbours(points, k)
    assert found.shape == (n, min(k, n - 1)) and found.dtype == torch.long
    if n > 1:
        distances = torch.cdist(points, points).fill_diagonal_(float("inf"))
        expected = distances.topk(min(k, n - 1), largest=False).indices
        assert torch.equal(found.sort(1).values, expected.sort(1).values)


def test_analytic_value_and_zero_for_uniform_colour():
    colors = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 2.0, 0.0]])
    neighbours = torch.tensor([[1, 2], [0, 2], [0, 1]])
    # point 0: (1 + 5) / 2, point 1: (1 + 4) / 2, point 2: (5 + 4) / 2
    assert color_smoothness(colors, neighbours).item() == pytest.approx(3.0 + 2.5 + 4.5)
    assert color_smoothness(torch.full((3, 3), 0.3), neighbours).item() == 0.0
    assert color_smoothness(colors, neighbours[:, :0]).item() == 0.0


def test_descent_removes_speckle_but_keeps_the_mean_colour():
    """On a cloud of points the pull smooths independent colour noise towards the shared colour."""
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(400, 3, generator=generator)
    colors = (torch.tensor([0.8, 0.2, 0.6]) + 0.3 * torch.randn(400, 3, generator=generator)).requires_grad_()
    neighbours = nearest_neighbours(points, 8)
    before = colors.detach().clone()
    optimizer = torch.optim.SGD([colors], lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        color_smoothness(colors, neighbours).backward()
        optimizer.step()
    assert colors.detach().std(0).max() < 0.2 * before.std(0).min()
    torch.testing.assert_close(colors.detach().mean(0), before.mean(0), atol=0.03, rtol=0)


def gaussians(n=200, seed=0):
    config = GaussiansConfig(num_points=n)
    return Gaussians.random_in_sphere(config, torch.Generator().manual_seed(seed))


def test_gaussians_loss_is_the_rgb_smoothness_over_their_nearest_centres():
    g = gaussians()
    rgb = g.params["sh0"][:, 0, :].detach() * C0
    expected = color_smoothness(rgb, nearest_neighbours(g.means, Gaussians.SMOOTHNESS_NEIGHBOURS))
    torch.testing.assert_close(g.color_smoothness_loss(0).detach(), expected)
    g.color_smoothness_loss(0).backward()
    assert g.params["sh0"].grad.abs().sum() > 0 and g.params["means"].grad is None  # colours only


def test_gaussians_refresh_neighbours_after_a_count_change_or_the_refresh_interval():
    g = gaussians()
    g.color_smoothness_loss(0)
    first = g._neighbours
    with torch.no_grad():
        g.params["means"].mul_(-1.0).add_(torch.rand_like(g.means))  # everything moves
    g.color_smoothness_loss(Gaussians.SMOOTHNESS_REFRESH - 1)
    assert g._neighbours is first  # still cached
    g.color_smoothness_loss(Gaussians.SMOOTHNESS_REFRESH)
    assert torch.equal(g._neighbours, nearest_neighbours(g.means, Gaussians.SMOOTHNESS_NEIGHBOURS))
    smaller = gaussians(n=150)
    smaller.load_training_state(g.training_state())  # neighbours of 200 Gaussians, 150 present
    smaller.color_smoothness_loss(Gaussians.SMOOTHNESS_REFRESH + 1)
    assert smaller._neighbours.shape[0] == 150


def test_training_state_round_trip_keeps_the_neighbours():
    a, b = gaussians(seed=0), gaussians(seed=0)
    a.color_smoothness_loss(10)
    b.load_training_state(a.training_state())
    assert torch.equal(a._neighbours, b._neighbours) and b._neighbours_step == 10
