import numpy as np
import pytest
import torch
import trimesh

from sds3d.cameras import CameraSampler, orbit_cameras
from sds3d.representations import Gaussians, GaussiansConfig
from sds3d.representations.gaussian_densification import DensificationConfig
from sds3d.representations.spherical_harmonics import evaluate_sh, rgb_to_sh0


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_matches_gsplat_reference(degree):
    from gsplat.cuda._torch_impl import _spherical_harmonics

    g = torch.Generator().manual_seed(degree)
    coeffs = torch.randn(50, (degree + 1) ** 2, 3, generator=g)
    dirs = torch.randn(50, 3, generator=g)
    torch.testing.assert_close(evaluate_sh(degree, coeffs, dirs), _spherical_harmonics(degree, dirs, coeffs))


def test_dc_colour_round_trip():
    rgb = torch.rand(10, 3)
    torch.testing.assert_close(evaluate_sh(0, rgb_to_sh0(rgb)[:, None], torch.randn(10, 3)) + 0.5, rgb)


def test_initialisers(generator):
    config = GaussiansConfig(num_points=300, init_radius=0.5)
    sphere = Gaussians.random_in_sphere(config, generator)
    assert len(sphere) == 300 and sphere.means.norm(dim=-1).max() <= 0.5 + 1e-6
    mesh = trimesh.creation.box(extents=(1, 1, 1))
    mesh.visual.face_colors = [255, 0, 0, 255]
    from_mesh = Gaussians.from_mesh(mesh, 400)
    # surface samples: every point on a face of the unit box
    assert (from_mesh.means.abs().max(dim=-1).values - 0.5).abs().max() < 1e-5
    colour = from_mesh.colors(orbit_cameras(0, 0, 2, 40, 8))[0]
    torch.testing.assert_close(colour, torch.tensor([1.0, 0, 0]).expand(400, 3), atol=1e-5, rtol=0)
    points = np.random.default_rng(0).normal(size=(64, 3))
    cloud = Gaussians.from_points(points, np.full((64, 3), 128, dtype=np.uint8))
    assert cloud.scales.min() > 0 and cloud.opacities.allclose(torch.tensor(0.1))


def test_render_shapes_background_and_features(generator):
    gaussians = Gaussians.random_in_sphere(GaussiansConfig(num_points=200, feature_dim=4), generator)
    with torch.no_grad():
        gaussians.params["features"].fill_(1.0)
    cams = CameraSampler(width=24, height=16).sample(3, generator)
    out = gaussians.render(cams, background=torch.tensor([0.0, 1.0, 0.0]))
    assert out.rgb.shape == (3, 16, 24, 3) and out.alpha.shape == (3, 16, 24, 1)
    assert out.depth.shape == (3, 16, 24, 1) and out.features.shape == (3, 16, 24, 4)
    empty = out.alpha[..., 0] == 0
    assert empty.any()
    assert (out.rgb[empty] == torch.tensor([0.0, 1.0, 0.0])).all()
    # features are alpha-weighted sums of constant 1 -> equal to alpha
    torch.testing.assert_close(out.features, out.alpha.expand_as(out.features), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_densify_and_prune_change_counts_as_expected(backend, generator):
    """gsplat's DefaultStrategy on our meta: Gaussians with a screen-space gradient are duplicated
    (small) or split (large); low-opacity ones are pruned."""
    n = 120
    config = GaussiansConfig(num_points=n, backend=backend, densify=DensificationConfig(
        refine_start_iter=0, refine_every=1, refine_stop_iter=10, grow_grad2d=0.0, grow_scale3d=0.01,
        prune_opa=0.05, prune_scale3d=10.0))
    gaussians = Gaussians.random_in_sphere(config, generator)
    with torch.no_grad():
        gaussians.params["scales"][: n // 2] = torch.log(torch.tensor(0.005))  # small: duplicate
        gaussians.params["scales"][n // 2:] = torch.log(torch.tensor(0.05))  # large: split
        gaussians.params["opacities"][::4] = torch.logit(torch.tensor(0.01))  # transparent: prune
    optimizers = gaussians.make_optimizers()
    cams = orbit_cameras([10, 40], [0, 120], 2.5, 40, 24)
    out = gaussians.render(cams)
    gaussians.before_backward(1, out)
    out.rgb.sum().backward()
    grad = out.meta["means2d"].grad  # [C, N, 2]
    seen = (out.meta["radii"] > 0).all(-1)
    grows = ((grad.norm(dim=-1) > 0) & seen).any(0)
    small = torch.arange(n) < n // 2
    low = torch.zeros(n, dtype=torch.bool)
    low[::4] = True
    for opt in optimizers.values():
        opt.step()
    gaussians.after_step(1, out, optimizers)
    duplicated, split = grows & small, grows & ~small
    # duplicates and split halves inherit opacity, so transparent parents are pruned with their children
    expected = (n + duplicated.sum() + split.sum()
                - (low.sum() + (low & duplicated).sum() + (low & split).sum()))
    assert grows.sum() > n // 2
    assert len(gaussians) == expected.item()
    assert all(opt.param_groups[0]["params"][0] is gaussians.params[name] for name, opt in optimizers.items())
    assert gaussians.opacities.min() >= 0.05


@pytest.mark.parametrize("reset_every", [3, 100])
def test_opacity_reset_clamps_to_twice_the_prune_threshold_on_its_steps_only(reset_every, generator):
    """The periodic 3DGS opacity reset runs (gsplat's own never fires): opacities above 2 prune_opa are
    clamped to it at every multiple of reset_every before refine_stop_iter, and their Adam moments cleared."""
    config = GaussiansConfig(num_points=50, backend="reference", densify=DensificationConfig(
        refine_start_iter=1000, refine_stop_iter=10, reset_every=reset_every, prune_opa=0.02))
    gaussians = Gaussians.random_in_sphere(config, generator)
    with torch.no_grad():
        gaussians.params["opacities"][:] = torch.logit(torch.linspace(0.01, 0.9, 50))
    optimizers = gaussians.make_optimizers()
    for opt in optimizers.values():
        opt.param_groups[0]["lr"] = 0.0  # Adam keeps moments, parameters stay: only the reset changes them
    cams = orbit_cameras([10, 40], [0, 120], 2.5, 40, 24)
    for step in (1, 2, 3):
        before = gaussians.opacities.detach().clone()
        out = gaussians.render(cams)
        gaussians.before_backward(step, out)
        out.rgb.sum().backward()
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad()
        gaussians.after_step(step, out, optimizers)
        after = gaussians.opacities.detach()
        if step == reset_every:
            torch.testing.assert_close(after, before.clamp(max=0.04))
            assert not optimizers["opacities"].state[gaussians.params["opacities"]]["exp_avg"].any()
        else:
            torch.testing.assert_close(after, before)


@pytest.mark.parametrize("degree,features", [(0, 0), (2, 3)])
def test_ply_round_trip_is_exact(tmp_path, generator, degree, features):
    gaussians = Gaussians.random_in_sphere(GaussiansConfig(num_points=77, sh_degree=degree, feature_dim=features),
                                           generator)
    with torch.no_grad():
        for p in gaussians.params.values():
            p.add_(torch.randn(p.shape, generator=generator))
    path = tmp_path / "asset.ply"
    gaussians.save_ply(path)
    loaded = Gaussians.load_ply(path)
    assert loaded.config.sh_degree == degree and loaded.config.feature_dim == features
    for name, value in gaussians.params.items():  # quaternions and SH pass through a rotation (sds3d.axes)
        torch.testing.assert_close(loaded.params[name], value, rtol=1e-6, atol=1e-6, msg=name)
    header = path.read_bytes().split(b"end_header")[0].decode()
    names = [line.split()[-1] for line in header.splitlines() if line.startswith("property")]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[-4 - features:len(names) - features] == ["rot_0", "rot_1", "rot_2", "rot_3"]
    # generic PLY readers see a point cloud with our positions, -y up (world (x, y, z) -> (y, -z, -x))
    cloud = trimesh.load(path)
    x, y, z = gaussians.means.detach().numpy().T
    np.testing.assert_array_equal(np.asarray(cloud.vertices, dtype=np.float32), np.stack([y, -z, -x], 1))


def test_pruning_every_gaussian_warns_and_the_empty_asset_still_saves(tmp_path, generator):
    """A run whose regularisers make every Gaussian transparent ends with an empty asset: the user is
    told when it happens, and the empty asset saves, loads and renders as the background."""
    config = GaussiansConfig(num_points=40, sh_degree=1, feature_dim=2, densify=DensificationConfig(
        refine_start_iter=0, refine_every=1, refine_stop_iter=10, prune_opa=0.05))
    gaussians = Gaussians.random_in_sphere(config, generator)
    with torch.no_grad():
        gaussians.params["opacities"].fill_(torch.logit(torch.tensor(0.01)))
    optimizers = gaussians.make_optimizers()
    cams = orbit_cameras([10, 40], [0, 120], 2.5, 40, 24)
    out = gaussians.render(cams)
    gaussians.before_backward(1, out)
    out.rgb.sum().backward()
    with pytest.warns(RuntimeWarning, match="removed every Gaussian"):
        gaussians.after_step(1, out, optimizers)
    assert len(gaussians) == 0
    gaussians.save_ply(tmp_path / "empty.ply")
    loaded = Gaussians.load_ply(tmp_path / "empty.ply")
    assert (loaded.config.sh_degree, loaded.config.feature_dim) == (1, 2)
    assert {name: tuple(p.shape) for name, p in loaded.params.items()} == {
        name: tuple(p.shape) for name, p in gaussians.params.items()}
    background = torch.tensor([0.2, 0.4, 0.6])
    render = loaded.render(cams, background)
    assert render.alpha.abs().max() == 0
    torch.testing.assert_close(render.rgb, background.expand_as(render.rgb))


def test_ply_rejects_other_files(tmp_path):
    mesh_path = tmp_path / "mesh.ply"
    trimesh.creation.box().export(mesh_path)
    with pytest.raises(ValueError):
        Gaussians.load_ply(mesh_path)


def test_state_dict_round_trip_with_different_count(generator):
    a = Gaussians.random_in_sphere(GaussiansConfig(num_points=50), generator)
    b = Gaussians.random_in_sphere(GaussiansConfig(num_points=20), generator)
    b.load_state_dict(a.state_dict())
    assert len(b) == 50 and torch.equal(b.means, a.means)
