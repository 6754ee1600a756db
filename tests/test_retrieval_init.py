"""Initialisation from retrieved assets (sds3d.retrieval.init): the asset's front at the run's front,
conversion to the run's representation, one asset per particle."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sds3d.cameras import orbit_cameras
from sds3d.errors import InputError
from sds3d.export import save_trimesh
from sds3d.representations import DMTetConfig, Gaussians, GaussiansConfig
from sds3d.representations.convert import mesh_to_gaussians
from sds3d.representations.mesh import Mesh
from sds3d.retrieval.init import asset_to_representation, gaussians_with_config, initial_representations
from sds3d.retrieval.library import yaw_rotation
from sds3d.world import make_object

pytestmark = pytest.mark.usefixtures("one_thread")


def turned(mesh, front_azimuth: float, scale: float = 1.0, shift=(0.0, 0.0, 0.0)):
    """The mesh with its front turned to azimuth `front_azimuth`, scaled and moved (as a library might hold it)."""
    out = mesh.copy()
    out.vertices = (np.asarray(mesh.vertices) @ yaw_rotation(front_azimuth).numpy().T) * scale + np.asarray(shift)
    return out


def retrieved(path, front_azimuth: float):
    """What retrieval returns for an asset whose front is seen from `front_azimuth`: the turn -a."""
    return SimpleNamespace(path=path, yaw_degrees=-front_azimuth)


def cameras(azimuths, width=96):
    return orbit_cameras(torch.full((len(azimuths),), 15.0), torch.tensor(azimuths, dtype=torch.float32), 2.5, 40.0,
                         width)


def alpha_iou(a, b) -> float:
    return float(((a > 0.5) & (b > 0.5)).sum() / ((a > 0.5) | (b > 0.5)).sum())


@pytest.mark.parametrize("suffix", [".glb", ".obj"])
def test_the_front_of_a_turned_scaled_moved_asset_ends_up_at_the_runs_front(tmp_path, suffix):
    """A chair whose front faces azimuth -120 in its file, 3x too large and off-centre: the run's
    Gaussians seen from azimuth 0 (the world's front, objects face +x) and 90 look like the
    canonical chair's front and left side; ignoring the yaw does not."""
    chair = make_object("chair", "blue").mesh
    path = save_trimesh(turned(chair, -120.0, scale=3.0, shift=(2.0, -1.0, 0.5)), tmp_path / f"chair{suffix}")
    config = GaussiansConfig(num_points=6000)
    [run] = initial_representations([retrieved(path, -120.0)], "gaussians", config, 1, torch.Generator().manual_seed(0))
    [unturned] = initial_representations([retrieved(path, 0.0)], "gaussians", config, 1, torch.Generator().manual_seed(0))
    views = cameras([0.0, 90.0])
    canonical = asset_to_representation(Mesh.from_trimesh(chair), "gaussians", config, torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference, got, wrong = canonical.render(views), run.render(views), unturned.render(views)
    assert alpha_iou(got.alpha, reference.alpha) > 0.9
    assert (got.rgb - reference.rgb).abs().mean() < 0.03
    assert alpha_iou(wrong.alpha, reference.alpha) < alpha_iou(got.alpha, reference.alpha) - 0.1
    means = run.means.detach()
    assert float((means.max(0).values - means.min(0).values).max()) == pytest.approx(1.0, abs=0.03)
    assert ((means.max(0).values + means.min(0).values) / 2).abs().max() < 0.03  # box centred


def test_conversion_to_each_representation_renders_like_the_asset(tmp_path):
    from sds3d.retrieval.library import load_asset

    path = save_trimesh(turned(make_object("mug", "red").mesh, 30.0), tmp_path / "mug.glb")
    placed = load_asset(path, -30.0)
    # 96 px: at 32 px the Gaussians' screen-space dilation (eps2d) alone widens the silhouette by ~1 px
    views = cameras([0.0, 120.0, -120.0])
    reference = placed.render(views)
    generator = torch.Generator().manual_seed(0)
    gaussians = asset_to_representation(placed, "gaussians", GaussiansConfig(num_points=4000), generator)
    dmtet = asset_to_representation(placed, "mesh", DMTetConfig(resolution=24, color_encoding="fourier"), generator)
    for representation in (gaussians, dmtet):
        with torch.no_grad():
            out = representation.render(views)
        assert alpha_iou(out.alpha, reference.alpha) > 0.8, type(representation).__name__
        inside = (reference.alpha[..., 0] > 0.9) & (out.alpha[..., 0] > 0.9)
        assert (out.rgb[inside] - reference.rgb[inside]).abs().mean() < 0.12, type(representation).__name__


def test_a_3dgs_asset_keeps_its_gaussians_under_the_runs_config():
    source = mesh_to_gaussians(make_object("cube", "green").mesh, num_points=300,
                               config=GaussiansConfig(sh_degree=1), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        source.params["shN"].normal_(generator=torch.Generator().manual_seed(1))
    run = asset_to_representation(source, "gaussians", GaussiansConfig(sh_degree=2, lr_means=5e-4))
    assert isinstance(run, Gaussians) and run.config.lr_means == 5e-4 and run.params["shN"].shape == (300, 8, 3)
    for name in ("means", "scales", "quats", "opacities", "sh0"):
        torch.testing.assert_close(run.params[name], source.params[name])
    torch.testing.assert_close(run.params["shN"][:, :3], source.params["shN"])
    assert torch.count_nonzero(run.params["shN"][:, 3:]) == 0
    lower = gaussians_with_config(source, GaussiansConfig(sh_degree=0))
    assert lower.params["shN"].shape == (300, 0, 3)


def test_one_asset_per_particle_cycling_through_the_retrieved_ones(tmp_path):
    paths = [save_trimesh(make_object(kind, "red").mesh, tmp_path / f"{kind}.glb") for kind in ("cube", "cone")]
    particles = initial_representations([retrieved(paths[0], 0.0), retrieved(paths[1], 0.0)], "gaussians",
                                        GaussiansConfig(num_points=500), 3, torch.Generator().manual_seed(0))
    assert len(particles) == 3 and all(isinstance(p, Gaussians) and len(p) == 500 for p in particles)
    # the cone narrows to a tip, the cube does not
    width_near_top = lambda g: float(g.means.detach()[g.means.detach()[:, 2] > 0.4][:, 0].abs().max())  # noqa: E731
    assert width_near_top(particles[0]) > 0.4 and width_near_top(particles[1]) < 0.2
    assert width_near_top(particles[2]) > 0.4
    assert particles[0].means.data_ptr() != particles[2].means.data_ptr()


def test_bad_assets_are_one_line_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such asset"):
        initial_representations([retrieved(tmp_path / "missing.glb", 0.0)], "gaussians", GaussiansConfig(), 1)
    (tmp_path / "broken.glb").write_bytes(b"not a glb")
    with pytest.raises(InputError, match="broken.glb"):
        initial_representations([retrieved(tmp_path / "broken.glb", 0.0)], "gaussians", GaussiansConfig(), 1)
    with pytest.raises(InputError, match="no retrieved assets"):
        initial_representations([], "gaussians", GaussiansConfig(), 1)
