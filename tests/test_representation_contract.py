"""What every registered representation must do, checked on each entry of the registry (as diffusers'
SchedulerCommonTest does for schedulers): a new representation is tested by adding its registry line.

Each starts from its default config section, a seeded generator and a seeded global RNG, as a run
does (`sds3d.generate.seed_everything`: DMTet's colour field draws from the global RNG)."""

import pytest
import torch

from sds3d.cameras import turntable_cameras
from sds3d.export import save_asset
from sds3d.representations import Gaussians, Mesh
from sds3d.representations.mesh import as_mesh
from sds3d.representations.registry import ALIASES, REPRESENTATIONS, canonical_name, representation_entry
from sds3d.world import make_object

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = sorted(REPRESENTATIONS)
CAMERAS = turntable_cameras(3, elevation=20.0, width=16)
# smaller settings that keep this file fast (a representation not named here runs at its defaults)
SMALL = {"nerf": {"levels": 4, "log2_table_size": 12, "max_resolution": 64, "samples_per_ray": 24,
                  "occupancy_resolution": 16}}


def config(name: str):
    return REPRESENTATIONS[name].config(**SMALL.get(name, {}))


def create(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return REPRESENTATIONS[name].cls.create(config(name), torch.Generator().manual_seed(seed))


@torch.no_grad()
def still(representation, cameras=CAMERAS):
    """A deterministic render: eval mode (NeRF's random shading off), no gradients."""
    return representation.eval().render(cameras)


def test_aliases_name_registered_representations():
    assert canonical_name("mesh") == "dmtet" and set(ALIASES.values()) <= set(REPRESENTATIONS)
    assert representation_entry("mesh") is REPRESENTATIONS["dmtet"]
    with pytest.raises(ValueError, match="choose one of gaussians, nerf, dmtet"):
        representation_entry("voxels")


@pytest.mark.parametrize("name", NAMES)
def test_create_gives_the_registered_class_and_the_same_start_for_the_same_seed(name):
    first, again = create(name), create(name)
    assert isinstance(first, REPRESENTATIONS[name].cls) and first.config == config(name)
    assert first.state_dict().keys() == again.state_dict().keys()
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_render_has_the_documented_shapes_and_ranges(name):
    out = create(name).render(CAMERAS, torch.tensor([0.2, 0.4, 0.6]))
    B, H, W = len(CAMERAS), CAMERAS.height, CAMERAS.width
    assert out.rgb.shape == (B, H, W, 3) and out.alpha.shape == (B, H, W, 1) and out.depth.shape == (B, H, W, 1)
    for image in (out.rgb, out.alpha):
        assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    assert (out.alpha > 0.5).any() and (out.alpha < 0.5).any()  # an object in the middle, background around it
    corner = out.rgb[:, 0, 0]  # nothing covers the corners: the background shows
    torch.testing.assert_close(corner, torch.tensor([0.2, 0.4, 0.6]).expand_as(corner), atol=0.02, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_of_a_render_reach_every_parameter_group(name):
    representation = create(name).train()
    out = representation.render(CAMERAS)
    (out.rgb.square().mean() + out.alpha.mean()).backward()
    for group in representation.param_groups():
        tensors = [p for p in group["params"] if p.numel()]
        if not tensors:  # e.g. Gaussians' higher SH bands at degree 0
            continue
        grads = [p.grad for p in tensors if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), group["name"]
        assert any(g.abs().sum() > 0 for g in grads), f"no gradient reaches {group['name']}"


@pytest.mark.parametrize("name", NAMES)
def test_a_state_dict_round_trip_reproduces_the_render_exactly(name):
    source, target = create(name, seed=1), create(name, seed=2)
    with torch.no_grad():  # move every parameter away from the fresh start
        for parameter in source.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(3)))
    target.load_state_dict(source.state_dict())
    target.load_training_state(source.training_state())
    expected, got = still(source), still(target)
    assert torch.equal(expected.rgb, got.rgb) and torch.equal(expected.alpha, got.alpha)


@pytest.mark.parametrize("name", NAMES)
def test_to_mesh_gives_a_coloured_surface_inside_the_bound(name):
    mesh = create(name).to_mesh(resolution=48, bound=0.6)
    assert isinstance(mesh, Mesh) and len(mesh.faces) > 0
    assert mesh.vertices.abs().max() <= 0.6 + 1e-5
    assert mesh.vertex_colors is not None and 0 <= mesh.vertex_colors.min() and mesh.vertex_colors.max() <= 1


@pytest.mark.slow  # distillation and meshing: a minute for NeRF and DMTet on a loaded machine
@pytest.mark.parametrize("name", NAMES)
def test_initialise_from_another_asset_takes_its_silhouettes(name):
    """Started from a mug (another run's asset), the representation's silhouettes overlap the mug's
    (a fresh one's overlap is the chance overlap of a ball with it)."""
    mug = as_mesh(make_object("mug", "red").mesh)
    entry = REPRESENTATIONS[name]
    started = entry.cls.initialise_from(mug, config(name), torch.Generator().manual_seed(0), distill_steps=10)
    assert isinstance(started, entry.cls)
    target = still(mug).alpha > 0.5

    def overlap(representation):
        seen = still(representation).alpha > 0.5
        return ((seen & target).sum() / (seen | target).sum()).item()

    assert overlap(started) > 0.4


@pytest.mark.slow  # UV unwrap and texture bake of NeRF and DMTet
@pytest.mark.parametrize("name", NAMES)
def test_the_saved_asset_reads_back_as_the_same_shape(name, tmp_path):
    representation = create(name)
    path = save_asset(representation, tmp_path)
    if isinstance(representation, Gaussians):
        loaded = Gaussians.load_ply(path)
        torch.testing.assert_close(loaded.means, representation.means, atol=1e-5, rtol=0)
    else:
        loaded = Mesh.load(path)
        assert path.suffix == ".glb" and len(loaded.faces) > 0
    expected, got = still(representation).alpha, still(loaded).alpha
    assert ((expected > 0.5) != (got > 0.5)).float().mean() < 0.05  # the same silhouettes
