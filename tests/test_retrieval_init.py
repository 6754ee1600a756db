"""Initialisation from retrieved assets (sds3d.retrieval.init): orientation by yaw, normalisation,
conversion to the run's representation, one asset per particle."""

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from sds3d.cameras import orbit_cameras
from sds3d.errors import InputError
from sds3d.export import save_trimesh
from sds3d.representations import DMTetConfig, Gaussians, GaussiansConfig
from sds3d.representations.convert import mesh_to_gaussians
from sds3d.representations.mesh import Mesh
from sds3d.retrieval.init import (asset_to_representation, front_to_world, initial_representations, load_asset,
                                  yaw_rotation)
from sds3d.world import make_object

pytestmark = pytest.mark.usefixtures("one_thread")


def turned(mesh, yaw_degrees: float, scale: float = 1.0, shift=(0.0, 0.0, 0.0)):
    """The mesh with its front turned to azimuth `yaw_degrees`, scaled and moved (as a library might hold it)."""
    out = mesh.copy()
    out.vertices = (np.asarray(mesh.vertices) @ yaw_rotation(yaw_degrees).numpy().T) * scale + np.asarray(shift)
    return out


def nearest_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Largest distance from a point of `a` to its nearest point of `b`, and back."""
    return max(cKDTree(b).query(a)[0].max(), cKDTree(a).query(b)[0].max())


@pytest.mark.parametrize("suffix", [".glb", ".obj", ".ply"])
def test_a_turned_scaled_moved_asset_comes_back_to_the_canonical_object(tmp_path, suffix):
    car = make_object("car", "red").mesh  # canonical: front +x, centred, largest extent 1
    path = save_trimesh(turned(car, 90.0, scale=3.0, shift=(2.0, -1.0, 0.5)), tmp_path / f"car{suffix}")
    placed = front_to_world(load_asset(path), 90.0)
    assert isinstance(placed, Mesh)
    points = placed.vertices.detach().numpy()
    assert nearest_gap(points, np.asarray(car.vertices)) < 1e-4
    wrong = front_to_world(load_asset(path), 0.0)  # the yaw ignored: the car faces +y
    assert nearest_gap(wrong.vertices.detach().numpy(), np.asarray(car.vertices)) > 0.1


def test_front_ends_up_at_the_runs_front_in_renders(tmp_path):
    """A chair whose front faces azimuth -120 in its file: after placement, the front camera
    (azimuth 0) sees what the canonical chair's front camera sees."""
    chair = make_object("chair", "blue").mesh
    path = save_trimesh(turned(chair, -120.0), tmp_path / "chair.glb")
    placed = front_to_world(load_asset(path), -120.0)
    cameras = orbit_cameras(torch.tensor([10.0, 10.0]), torch.tensor([0.0, 90.0]), 2.5, 40.0, 48)
    reference = Mesh.from_trimesh(chair).render(cameras)
    got = placed.render(cameras)
    assert (got.alpha - reference.alpha).abs().mean() < 0.01
    assert (got.rgb - reference.rgb).abs().mean() < 0.01
    unturned = load_asset(path).render(cameras)
    assert (unturned.alpha - reference.alpha).abs().mean() > 0.05


def test_gaussian_assets_are_turned_with_their_orientations_and_scaled(tmp_path):
    mug = make_object("mug", "green").mesh
    generator = torch.Generator().manual_seed(0)
    source = mesh_to_gaussians(turned(mug, 45.0, scale=2.0), num_points=3000, generator=generator)
    source.save_ply(tmp_path / "mug.ply")
    asset = load_asset(tmp_path / "mug.ply")
    assert isinstance(asset, Gaussians)
    placed = front_to_world(asset, 45.0)
    canonical = mesh_to_gaussians(mug, num_points=3000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(placed.means, canonical.means, atol=1e-4, rtol=0)
    torch.testing.assert_close(placed.scales, canonical.scales, rtol=1e-4, atol=1e-7)
    # a quaternion and its negative are the same rotation: compare the rotated normals (local +z)
    from sds3d.cuda._torch_gaussians import _quat_to_rotmat
    normal = lambda g: _quat_to_rotmat(g.quats.detach())[:, :, 2]  # noqa: E731
    torch.testing.assert_close(normal(placed), normal(canonical), atol=1e-4, rtol=0)


def test_conversion_to_each_representation_renders_like_the_asset(tmp_path):
    mug = make_object("mug", "red").mesh
    path = save_trimesh(turned(mug, 30.0), tmp_path / "mug.glb")
    placed = front_to_world(load_asset(path), 30.0)
    # 96 px: at 32 px the Gaussians' screen-space dilation (eps2d) alone widens the silhouette by ~1 px
    cameras = orbit_cameras(torch.tensor([15.0, 15.0, 15.0]), torch.tensor([0.0, 120.0, -120.0]), 2.5, 40.0, 96)
    reference = placed.render(cameras)
    generator = torch.Generator().manual_seed(0)
    gaussians = asset_to_representation(placed, "gaussians", GaussiansConfig(num_points=4000), generator)
    dmtet = asset_to_representation(placed, "mesh", DMTetConfig(resolution=24, color_encoding="fourier"), generator)
    for representation in (gaussians, dmtet):
        with torch.no_grad():
            out = representation.render(cameras)
        iou = ((out.alpha > 0.5) & (reference.alpha > 0.5)).sum() / ((out.alpha > 0.5) | (reference.alpha > 0.5)).sum()
        assert iou > 0.8, type(representation).__name__
        inside = (reference.alpha[..., 0] > 0.9) & (out.alpha[..., 0] > 0.9)
        assert (out.rgb[inside] - reference.rgb[inside]).abs().mean() < 0.12, type(representation).__name__


def test_one_asset_per_particle_cycling_through_the_retrieved_ones(tmp_path):
    paths = [save_trimesh(make_object(kind, "red").mesh, tmp_path / f"{kind}.glb") for kind in ("cube", "cone")]
    config = GaussiansConfig(num_points=500)
    particles = initial_representations([(paths[0], 0.0), (paths[1], 0.0)], "gaussians", config, 3,
                                        torch.Generator().manual_seed(0))
    assert len(particles) == 3 and all(isinstance(p, Gaussians) and len(p) == 500 for p in particles)
    extent = lambda g, axis: float(g.means.detach()[:, axis].max() - g.means.detach()[:, axis].min())  # noqa: E731
    # the cone narrows to a tip, the cube does not
    width_near_top = lambda g: float(g.means.detach()[g.means.detach()[:, 2] > 0.4][:, 0].abs().max())  # noqa: E731
    assert width_near_top(particles[0]) > 0.4 and width_near_top(particles[1]) < 0.2
    assert width_near_top(particles[2]) > 0.4 and particles[2] is not particles[0]
    assert particles[0].means.data_ptr() != particles[2].means.data_ptr()
    assert extent(particles[0], 2) == pytest.approx(1.0, abs=0.02) and extent(particles[0], 0) == pytest.approx(1.0, abs=0.02)


def test_bad_assets_are_one_line_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such asset"):
        load_asset(tmp_path / "missing.glb")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unsupported asset"):
        load_asset(tmp_path / "notes.txt")
    (tmp_path / "broken.glb").write_bytes(b"not a glb")
    with pytest.raises(InputError, match="broken.glb"):
        load_asset(tmp_path / "broken.glb")
    with pytest.raises(InputError, match="no retrieved assets"):
        initial_representations([], "gaussians", GaussiansConfig(), 1)
