"""Conversions between representations (convert, meshing, mesh_sdf, distill), checked on analytic
shapes and micro-world ground truth.

Chamfer thresholds (object units: every micro-world object's largest extent is 1):
- mesh -> Gaussians -> mesh at a 128^3 grid over [-0.6, 0.6]^3 (spacing h = 0.0094): < 0.02. The
  marching-cubes surface is the outer level set of a shell of flat Gaussians whose scales are
  widened by h / 2, so it lies about one widened standard deviation (~0.01) outside the true
  surface; the Chamfer estimate itself has a floor of 0.003-0.007 from sampling 30k points.
  Measured on all 28 kinds: 0.0114 (octahedron) to 0.0163 (tree).
- mesh -> DMTet: < 0.4 grid spacings. At resolution 24 (spacing 0.05, tolerance 0.02) measured
  0.0085 (chair) and 0.0096 (mug), 0.17-0.19 spacings; at resolution 32 0.2 spacings as well.
"""

import math

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from sds3d.cameras import CameraSampler
from sds3d.cuda._torch_gaussians import _quat_to_rotmat
from sds3d.evaluate import chamfer_distance
from sds3d.representations.distill import distill
from sds3d.representations.dmtet import DMTet, DMTetConfig, mesh_to_dmtet
from sds3d.representations.gaussians import Gaussians, mesh_to_gaussians
from sds3d.representations.mesh_sdf import _point_triangle_distance, mesh_sdf_grid
from sds3d.representations.meshing import density_to_mesh, gaussian_colors_at, gaussians_to_mesh, grid_to_mesh
from sds3d.representations.mesh import Mesh
from sds3d.representations.spherical_harmonics import C0
from sds3d.representations.tet_grid import grid_points
from sds3d.world import KINDS, make_object

pytestmark = pytest.mark.usefixtures("one_thread")

GAUSSIAN_ROUND_TRIP_CHAMFER = 0.02
DMTET_CHAMFER_SPACINGS = 0.4


def _chamfer(a: Mesh, b: Mesh, generator) -> float:
    points_a, points_b = a.sample_surface(30000, generator)[0], b.sample_surface(30000, generator)[0]
    return chamfer_distance(points_a.numpy(), points_b.numpy())


def test_mesh_to_gaussians_are_flat_discs_on_the_surface_with_its_colours():
    truth = make_object("snowman", "red").mesh
    g = torch.Generator().manual_seed(0)
    gaussians = mesh_to_gaussians(truth, num_points=5000, scale=0.7, flatness=0.1, generator=g)
    assert len(gaussians) == 5000
    means = gaussians.means.detach().numpy()
    # every mean lies on the surface: exact point-mesh distance
    tri = torch.tensor(truth.vertices[truth.faces], dtype=torch.float64)
    p = torch.tensor(means[:300], dtype=torch.float64)
    distance = _point_triangle_distance(p[:, None], tri[None, :, 0], tri[None, :, 1], tri[None, :, 2]).amin(1)
    assert distance.max() < 1e-6
    sigma = 0.7 * math.sqrt(truth.area / 5000)
    torch.testing.assert_close(gaussians.scales, torch.tensor([sigma, sigma, 0.1 * sigma]).expand(5000, 3))
    assert (gaussians.opacities - 0.95).abs().max() < 1e-5
    # the thin axis of every disc is the normal of the face it was sampled on
    normals = _quat_to_rotmat(gaussians.quats.detach())[:, :, 2]  # local z in world
    mesh = Mesh.from_trimesh(truth)
    _, sample_normals, colors, _, _ = mesh.sample_surface(5000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(normals, sample_normals, rtol=0, atol=1e-5)
    palette = torch.tensor(np.unique(truth.visual.face_colors[:, :3], axis=0) / 255.0, dtype=torch.float32)
    rgb = (gaussians.params["sh0"][:, 0] * C0 + 0.5).detach()
    assert ((rgb[:, None] - palette).abs().amax(-1).amin(1) < 1e-5).all()  # every colour is one of the mesh's


@pytest.mark.parametrize("kind", ["cube", "mug", "chair"])
def test_mesh_to_gaussians_to_mesh_keeps_the_shape_and_colours(kind):
    truth = Mesh.from_trimesh(make_object(kind, "blue").mesh)
    g = torch.Generator().manual_seed(0)
    back = gaussians_to_mesh(mesh_to_gaussians(truth, 20000, generator=g), resolution=128)
    assert _chamfer(truth, back, g) < GAUSSIAN_ROUND_TRIP_CHAMFER
    # vertex colours: those of the nearest ground-truth surface sample, up to blending at part borders
    points, _, colors, _, _ = truth.sample_surface(50000, g)
    _, nearest = cKDTree(points.numpy()).query(back.positions[back.vertex_to_position].detach().numpy())
    error = (back.vertex_colors.detach() - colors[nearest]).abs().amax(-1)
    assert error.median() < 0.01 and (error < 0.1).float().mean() > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_gaussian_round_trip_chamfer_on_every_kind(kind):
    truth = Mesh.from_trimesh(make_object(kind, "red").mesh)
    g = torch.Generator().manual_seed(0)
    back = gaussians_to_mesh(mesh_to_gaussians(truth, 20000, generator=g), resolution=128)
    assert _chamfer(truth, back, g) < GAUSSIAN_ROUND_TRIP_CHAMFER


def test_density_to_mesh_recovers_a_sphere_and_its_colours():
    sigma, threshold = 0.3, 0.5
    radius = sigma * math.sqrt(2 * math.log(1 / threshold))

    def color(points):
        return 0.5 + 0.5 * torch.tanh(points * torch.tensor([2.0, -1.0, 3.0]))

    mesh = density_to_mesh(lambda p: torch.exp(-(p ** 2).sum(-1) / (2 * sigma ** 2)), threshold, resolution=48,
                           bound=0.6, color_fn=color)
    vertices = mesh.vertices.detach()
    assert (vertices.norm(dim=-1) - radius).abs().max() < 0.1 * 1.2 / 48
    closed = trimesh.Trimesh(vertices.numpy(), mesh.faces.numpy())
    assert closed.is_watertight and closed.volume > 0
    torch.testing.assert_close(mesh.vertex_colors.detach(), color(vertices))


def test_grid_to_mesh_keeps_only_the_outside_of_a_shell():
    points = grid_points(40, 0.6)
    shell = torch.exp(-((points.norm(dim=-1) - 0.4) / 0.03) ** 2).reshape(41, 41, 41)  # a hollow sphere
    filled = trimesh.Trimesh(*(t.numpy() for t in grid_to_mesh(shell, 0.5, 0.6)))
    hollow = trimesh.Trimesh(*(t.numpy() for t in grid_to_mesh(shell, 0.5, 0.6, fill_interior=False)))
    outer = 0.4 + 0.03 * math.sqrt(math.log(2))
    assert len(filled.split()) == 1 and len(hollow.split()) == 2
    assert filled.volume == pytest.approx(4 / 3 * math.pi * outer ** 3, rel=0.03)
    assert (np.linalg.norm(filled.vertices, axis=1) - outer).__abs__().max() < 0.6 * 1.2 / 40


def test_gaussian_colors_at_blends_by_density():
    means = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0]])
    gaussians = Gaussians(means, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), scales=torch.full((2, 3), 0.05),
                          opacities=torch.tensor([0.9, 0.9]))
    points = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.15, 0.0, 0.0], [0.1, 0.0, 0.0]])
    colors = gaussian_colors_at(gaussians, points, k=2, min_scale=0.0)
    torch.testing.assert_close(colors[0], torch.tensor([1.0, 0.0, 0.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(colors[1], torch.tensor([0.0, 0.0, 1.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(colors[2], torch.tensor([0.5, 0.0, 0.5]), rtol=0, atol=1e-5)
    w = math.exp(-0.5 * (0.1 / 0.05) ** 2), math.exp(-0.5 * (0.2 / 0.05) ** 2)
    torch.testing.assert_close(colors[3], torch.tensor([w[0], 0.0, w[1]]) / sum(w), rtol=0, atol=1e-5)


def test_mesh_sdf_grid_is_exact_for_a_box_and_unions_overlapping_parts():
    box = trimesh.creation.box(extents=(0.6, 0.4, 0.5))
    sdf = mesh_sdf_grid(torch.tensor(box.vertices), torch.tensor(box.faces), 13, 0.6)
    p = grid_points(13, 0.6).double()  # spacing 1.2 / 13: no grid vertex on a box face
    q = p.abs() - torch.tensor([0.3, 0.2, 0.25], dtype=torch.float64)  # analytic box SDF
    exact = q.clamp(min=0).norm(dim=-1) + q.amax(-1).clamp(max=0)
    torch.testing.assert_close(sdf.double(), exact, rtol=0, atol=1e-5)

    # two closed boxes overlapping, concatenated without merging (as micro-world parts are)
    other = trimesh.creation.box(extents=(0.3, 0.3, 0.9))
    other.apply_translation([0.25, 0.0, 0.1])
    both = trimesh.util.concatenate([box, other])
    sdf = mesh_sdf_grid(torch.tensor(both.vertices), torch.tensor(both.faces), 13, 0.6)
    in_box = (p.abs() < torch.tensor([0.3, 0.2, 0.25], dtype=torch.float64)).all(-1)
    in_other = ((p - torch.tensor([0.25, 0.0, 0.1], dtype=torch.float64)).abs()
                < torch.tensor([0.15, 0.15, 0.45], dtype=torch.float64)).all(-1)
    assert torch.equal(sdf < 0, in_box | in_other)


@pytest.mark.parametrize("kind", ["mug", "chair"])
def test_mesh_to_dmtet_matches_the_surface_and_its_colours(kind):
    truth = Mesh.from_trimesh(make_object(kind, "yellow").mesh)
    g = torch.Generator().manual_seed(0)
    dmtet = mesh_to_dmtet(truth, DMTetConfig(resolution=24), color_steps=60, generator=g)
    vertices, faces = dmtet.extract_mesh()
    surface = trimesh.Trimesh(vertices.detach().numpy(), faces.numpy(), process=False)
    assert surface.is_watertight and surface.volume > 0
    assert _chamfer(truth, Mesh(vertices.detach(), faces), g) < DMTET_CHAMFER_SPACINGS * dmtet.spacing
    points, _, colors, _, _ = truth.sample_surface(5000, g)
    with torch.no_grad():
        error = (dmtet.color_field(points) - colors).abs().mean()
    # the mean colour is off by 0.080 (chair) and 0.035 (mug), an unfitted field by 0.076 and 0.031;
    # 60 steps reach 0.023 and 0.005, as 150 do
    assert error < 0.08 and error < 0.5 * (colors.mean(0) - colors).abs().mean()


def test_distill_fits_a_dmtet_to_a_mesh_by_rendering_both():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    source = Mesh(torch.tensor(sphere.vertices), torch.tensor(sphere.faces),
                  torch.tensor([0.9, 0.2, 0.1]).expand(len(sphere.vertices), 3))
    target = DMTet.from_sdf(lambda p: p.norm(dim=-1) - 0.25, DMTetConfig(resolution=12, bound=0.6, lr_sdf=2e-2))
    g = torch.Generator().manual_seed(0)
    sampler = CameraSampler(width=32, height=32)
    losses = distill(source, target, steps=40, sampler=sampler, batch_size=2, generator=g)
    assert np.mean(losses[-5:]) < 0.25 * np.mean(losses[:5])
    vertices, _ = target.extract_mesh()
    assert vertices.norm(dim=-1).mean() > 0.33  # grew from 0.25 towards 0.4
    with torch.no_grad():
        probe = target.color_field(vertices)
    assert (probe.mean(0) - torch.tensor([0.9, 0.2, 0.1])).abs().max() < 0.25


def test_silhouette_level_picks_the_density_whose_surface_matches_the_target():
    """A Gaussian blob exp(-r^2 / 2 s^2): its level-l surface is the sphere of radius
    s sqrt(2 ln(1 / l)); against the silhouettes of the radius-0.3 sphere the level closest to
    exp(-0.3^2 / 2 s^2) = 0.61 must win."""
    from sds3d.cameras import turntable_cameras
    from sds3d.representations.meshing import density_grid, silhouette_level

    sigma, bound = 0.3, 0.6
    volume = density_grid(lambda p: torch.exp(-(p ** 2).sum(-1) / (2 * sigma ** 2)), 48, bound)
    cameras = turntable_cameras(4, elevation=20.0, width=48)
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.3)
    target = Mesh(torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces)).render(cameras).alpha
    assert silhouette_level(volume, bound, cameras, target, (0.1, 0.3, 0.45, 0.6, 0.75, 0.9)) == 0.6
    assert silhouette_level(volume, bound, cameras, target, (0.8, 0.9, 5.0)) == 0.8  # 5.0: no surface, skipped
    with pytest.raises(ValueError, match="no surface"):
        silhouette_level(volume, bound, cameras, target, (2.0,))
