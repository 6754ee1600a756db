"""Pruning the Gaussians the white training background hides ("white fog")."""

import torch

from sds3d.cameras import orbit_cameras
from sds3d.representations.gaussians import Gaussians
from sds3d.representations.hidden_gaussians import hidden_gaussians

WHITE, BLACK = torch.ones(3), torch.zeros(3)


def blob(centre, n, spread, rgb, generator):
    """n opaque Gaussians of colour `rgb` in a ball of radius `spread` around `centre`."""
    means = torch.tensor(centre) + spread * torch.randn(n, 3, generator=generator).clamp(-1.5, 1.5)
    return means, torch.tensor(rgb).expand(n, 3)


def scene(parts, generator):
    means, colours = zip(*(blob(*part, generator=generator) for part in parts))
    means, colours = torch.cat(means), torch.cat(colours)
    return Gaussians(means, colours, scales=torch.full((len(means), 3), 0.04), opacities=torch.full((len(means),), 0.95))


def test_fog_beside_an_object_is_hidden_and_its_removal_changes_nothing_on_white():
    generator = torch.Generator().manual_seed(0)
    gaussians = scene([((0.0, 0.0, 0.15), 300, 0.12, (0.9, 0.1, 0.1)),     # a red object (+z is up)
                       ((0.0, 0.0, -0.45), 200, 0.06, (1.0, 1.0, 1.0))], generator)  # white fog under it
    hidden = hidden_gaussians(gaussians, WHITE)
    assert hidden[300:].float().mean() > 0.9 and not hidden[:300].any()
    cameras = orbit_cameras(torch.tensor([10.0, 40.0]), torch.tensor([0.0, 120.0]), 2.5, 40.0, 64)
    with torch.no_grad():
        before_white, before_black = (gaussians.render(cameras, bg).rgb.clamp(0, 1) for bg in (WHITE, BLACK))
        gaussians.params["opacities"][hidden] = -30.0
        after_white, after_black = (gaussians.render(cameras, bg).rgb.clamp(0, 1) for bg in (WHITE, BLACK))
    assert (before_white - after_white).abs().max() < 0.05
    assert (before_black - after_black).abs().amax(-1).gt(0.5).sum() > 100  # the fog showed on black


def test_white_gaussians_that_cover_a_coloured_surface_stay():
    """A white patch on a blue wall: removing it would show blue, so it is not hidden; nor is a grey part."""
    generator = torch.Generator().manual_seed(1)
    gaussians = scene([((-0.05, 0.0, 0.0), 400, 0.15, (0.1, 0.2, 0.9)),    # blue
                       ((0.25, 0.0, 0.0), 150, 0.05, (1.0, 1.0, 1.0)),    # white, in front of it (front: +x)
                       ((0.0, 0.5, 0.0), 100, 0.06, (0.6, 0.6, 0.6))], generator)  # grey: not background-coloured
    cameras = orbit_cameras(torch.zeros(3), torch.tensor([-20.0, 0.0, 20.0]), 2.5, 40.0, 64)
    hidden = hidden_gaussians(gaussians, WHITE, cameras)
    assert hidden[400:550].float().mean() < 0.1 and not hidden[550:].any()
    assert hidden_gaussians(gaussians, BLACK, cameras).sum() == 0  # nothing is black


def test_finish_prunes_the_hidden_gaussians_with_their_optimiser_moments():
    generator = torch.Generator().manual_seed(2)
    gaussians = scene([((0.0, 0.0, 0.15), 200, 0.12, (0.1, 0.7, 0.1)),
                       ((0.0, 0.0, -0.45), 100, 0.06, (1.0, 1.0, 1.0))], generator)
    optimizers = gaussians.make_optimizers()
    output = gaussians.render(orbit_cameras(0.0, 0.0, 2.5, 40.0, 32))
    output.rgb.mean().backward()
    for optimizer in optimizers.values():
        optimizer.step()
    expected = len(gaussians) - int(hidden_gaussians(gaussians, WHITE).sum())
    record = gaussians.finish(WHITE, optimizers)
    assert len(gaussians) == expected < 300 and record == {"hidden_gaussians_pruned": 300 - expected}
    assert optimizers["means"].state[gaussians.params["means"]]["exp_avg"].shape == (expected, 3)
    for name, optimizer in optimizers.items():
        param = optimizer.param_groups[0]["params"][0]
        moments = optimizer.state[param]
        assert param is gaussians.params[name] and ("exp_avg" not in moments or moments["exp_avg"].shape == param.shape)
    gaussians.config.prune_hidden = False
    assert gaussians.finish(WHITE, optimizers) == {}
