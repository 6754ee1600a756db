"""DMTet: the tetrahedral grid, the marching-tetrahedra table, surfaces of analytic SDFs and
densities, gradients from images to SDF values."""

import itertools
import math

import pytest
import torch
import trimesh

from sds3d.cameras import orbit_cameras
from sds3d.representations.dmtet import (TET_EDGES, TRIANGLE_TABLE, DMTet, DMTetConfig, marching_tetrahedra,
                                        normal_consistency)
from sds3d.representations.tet_grid import cube_tetrahedra, grid_points

pytestmark = pytest.mark.usefixtures("one_thread")


def _signed_volumes(points, tets):
    p = points.double()[tets]
    return torch.linalg.det(torch.stack([p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]], 1)) / 6


def test_cube_grid_is_a_conforming_positively_oriented_tetrahedralisation():
    R, bound = 4, 0.5
    points, tets = grid_points(R, bound), cube_tetrahedra(R)
    assert points.shape == ((R + 1) ** 3, 3) and tets.shape == (6 * R ** 3, 4)
    torch.testing.assert_close(points[(1 * (R + 1) + 2) * (R + 1) + 3], torch.tensor([-0.25, 0.0, 0.25]))
    volumes = _signed_volumes(points, tets)
    torch.testing.assert_close(volumes, torch.full_like(volumes, (2 * bound / R) ** 3 / 6))
    # conforming: interior triangles are shared by exactly two tetrahedra, the others tile the cube's surface
    triangles = torch.cat([tets[:, list(c)] for c in itertools.combinations(range(4), 3)]).sort(-1).values
    _, counts = torch.unique(triangles, dim=0, return_counts=True)
    assert set(counts.tolist()) == {1, 2} and (counts == 1).sum() == 6 * 2 * R ** 2


def test_triangle_table_covers_the_crossed_edges_with_outward_normals():
    corners = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert _signed_volumes(corners, torch.tensor([[0, 1, 2, 3]])) > 0
    midpoints = corners[TET_EDGES].mean(1)  # [6, 3]
    for case in range(16):
        inside = torch.tensor([case >> i & 1 for i in range(4)], dtype=torch.bool)
        crossed = {e for e, (a, b) in enumerate(TET_EDGES.tolist()) if inside[a] != inside[b]}
        triangles = [t for t in TRIANGLE_TABLE[case].tolist() if t[0] >= 0]
        assert {e for t in triangles for e in t} == crossed
        assert len(triangles) == {0: 0, 3: 1, 4: 2}[len(crossed)]
        for t in triangles:
            p = midpoints[t]
            normal = torch.linalg.cross(p[1] - p[0], p[2] - p[0])
            outward = corners[~inside].mean(0) - corners[inside].mean(0)
            assert (normal @ outward) > 0, (case, t)


@pytest.mark.parametrize("resolution", [8, 16])
def test_sphere_sdf_gives_a_closed_outward_mesh_within_a_grid_spacing(resolution):
    radius = 0.37
    dmtet = DMTet.from_sdf(lambda p: p.norm(dim=-1) - radius, DMTetConfig(resolution=resolution, bound=0.6))
    vertices, faces = dmtet.extract_mesh()
    mesh = trimesh.Trimesh(vertices.detach().numpy(), faces.numpy(), process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0  # outward normals
    error = (vertices.norm(dim=-1) - radius).abs().max().item()
    assert error < dmtet.spacing / 4, (error, dmtet.spacing)
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * radius ** 3, rel=0.1)


def test_density_field_initialisation_puts_the_surface_on_its_level_set():
    sigma, threshold = 0.25, 0.3
    radius = sigma * math.sqrt(2 * math.log(1 / threshold))  # exp(-r^2 / 2 sigma^2) = threshold
    dmtet = DMTet.from_density(lambda p: torch.exp(-(p ** 2).sum(-1) / (2 * sigma ** 2)), threshold,
                               DMTetConfig(resolution=16, bound=0.6))
    vertices, _ = dmtet.extract_mesh()
    assert (vertices.norm(dim=-1) - radius).abs().max() < dmtet.spacing


def test_offsets_are_bounded_and_move_the_surface():
    config = DMTetConfig(resolution=8, bound=0.6, deform_scale=0.4)
    dmtet = DMTet.from_sdf(lambda p: p.norm(dim=-1) - 0.33, config)
    with torch.no_grad():
        dmtet.deform.fill_(100.0)  # saturates tanh: every vertex moves by 0.4 spacings along each axis
    offsets = dmtet.vertex_positions() - dmtet.grid
    torch.testing.assert_close(offsets, torch.full_like(offsets, 0.4 * dmtet.spacing))
    vertices, _ = dmtet.extract_mesh()
    torch.testing.assert_close(vertices.mean(0), torch.full((3,), 0.4 * dmtet.spacing), rtol=0, atol=0.02)


def test_image_loss_gradients_reach_sdf_values_and_match_finite_differences():
    torch.manual_seed(0)
    # radii off the grid vertices (spacing 0.15): no SDF value is exactly 0, where the mesh has a kink
    dmtet = DMTet.from_sdf(lambda p: p.norm(dim=-1) - 0.31, DMTetConfig(resolution=8, bound=0.6)).double()
    cameras = orbit_cameras([10.0, 50.0], [0.0, 110.0], 2.2, 40.0, 24)
    target = DMTet.from_sdf(lambda p: p.norm(dim=-1) - 0.41, DMTetConfig(resolution=8, bound=0.6)).double()
    with torch.no_grad():
        goal = target.render(cameras)

    def loss():
        out = dmtet.render(cameras)
        return ((out.rgb - goal.rgb) ** 2).sum() + ((out.alpha - goal.alpha) ** 2).sum()

    loss().backward()
    sdf_grad, deform_grad = dmtet.sdf.grad.clone(), dmtet.deform.grad.clone()
    vertices = dmtet.grid
    near_surface = (vertices.norm(dim=-1) - 0.31).abs() < 2 * dmtet.spacing
    assert sdf_grad[near_surface].abs().sum() > 0 and deform_grad.abs().sum() > 0
    assert (sdf_grad[~near_surface] == 0).all()  # only edges that cross the surface carry geometry
    assert next(dmtet.color_field.parameters()).grad.abs().sum() > 0

    eps = 1e-6
    for i in sdf_grad.abs().argsort(descending=True)[:5].tolist():
        with torch.no_grad():
            dmtet.sdf[i] += eps
            plus = loss()
            dmtet.sdf[i] -= 2 * eps
            minus = loss()
            dmtet.sdf[i] += eps
        assert sdf_grad[i].item() == pytest.approx(((plus - minus) / (2 * eps)).item(), rel=1e-4, abs=1e-6)


def test_an_empty_zero_set_renders_background_and_still_backpropagates():
    dmtet = DMTet(torch.ones(9 ** 3), DMTetConfig(resolution=8))
    out = dmtet.render(orbit_cameras(0.0, 0.0, 2.5, 40.0, 16), torch.tensor([0.2, 0.3, 0.4]))
    torch.testing.assert_close(out.rgb, torch.tensor([0.2, 0.3, 0.4]).expand(1, 16, 16, 3))
    assert (out.alpha == 0).all()
    out.rgb.sum().backward()
    assert dmtet.sdf.grad is not None


def test_marching_tetrahedra_on_one_tetrahedron_interpolates_the_zero_crossings():
    corners = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    sdf = torch.tensor([-1.0, 3.0, 1.0, 1.0])  # vertex 0 inside
    vertices, faces = marching_tetrahedra(corners, torch.tensor([[0, 1, 2, 3]]), sdf)
    assert faces.shape == (1, 3)
    expected = {(0.25, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 0.0, 0.5)}
    assert {tuple(round(x, 6) for x in v) for v in vertices.tolist()} == expected


def test_normal_consistency_is_zero_on_a_plane_and_matches_the_dihedral_angle():
    square = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    assert normal_consistency(square, faces).item() == pytest.approx(0.0, abs=1e-7)
    folded = square.clone()
    folded[3, 2] = 1.0  # lift one corner: the two faces meet at the dihedral angle of their normals
    corners = folded[faces]
    normals = torch.nn.functional.normalize(torch.linalg.cross(corners[:, 1] - corners[:, 0],
                                                               corners[:, 2] - corners[:, 0]), dim=-1)
    expected = 1 - (normals[0] * normals[1]).sum()
    assert normal_consistency(folded, faces).item() == pytest.approx(expected.item(), rel=1e-6)
    assert expected > 0.1


def test_normal_consistency_enters_the_loss_and_smooths_a_rough_sphere():
    config = DMTetConfig(resolution=12, normal_consistency_weight=1.0)
    dmtet = DMTet.from_sdf(lambda p: p.norm(dim=-1) - 0.4, config)
    with torch.no_grad():
        dmtet.deform.add_(torch.randn(dmtet.deform.shape, generator=torch.Generator().manual_seed(0)))
    cameras = orbit_cameras(torch.tensor([20.0]), torch.tensor([0.0]), 2.5, 40.0, 16)
    output = dmtet.render(cameras)
    rough = output.meta["regularizers"]["normal_consistency"]
    assert output.meta["regularizer_loss"].item() == pytest.approx(rough.item())
    optimizer = torch.optim.Adam([dmtet.deform], lr=0.05)
    for _ in range(30):
        loss = normal_consistency(*dmtet.extract_mesh())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert normal_consistency(*dmtet.extract_mesh()).item() < 0.5 * rough.item()
    with torch.no_grad():
        assert "regularizer_loss" not in (dmtet.render(cameras).meta or {})  # previews: no extra work


def test_hash_grid_colour_field_native_matches_reference_and_moves_the_surface():
    """The default texture field is a hash grid (native kernel): its render and the gradients it
    sends to the table, the SDF and the deformation agree with the PyTorch reference backend."""
    cameras = orbit_cameras([15.0, 40.0], [30.0, 200.0], 2.2, 40.0, 24)
    grads = {}
    for backend in ("native", "reference"):
        torch.manual_seed(0)  # the colour MLP's initialisation
        dmtet = DMTet.from_sdf(lambda p: p.norm(dim=-1) - 0.3, DMTetConfig(resolution=8, backend=backend))
        with torch.no_grad():  # a colour that varies over the surface, so d colour / d point != 0
            dmtet.color_field.encoding.grid.tables.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
        out = dmtet.render(cameras)
        (out.rgb * torch.linspace(0, 1, 24)[:, None, None]).sum().backward()
        grads[backend] = (out.rgb.detach(), dmtet.color_field.encoding.grid.tables.grad, dmtet.sdf.grad,
                          dmtet.deform.grad)
    assert grads["native"][1].abs().sum() > 0 and grads["native"][3].abs().sum() > 0
    for native, reference in zip(grads["native"], grads["reference"]):
        torch.testing.assert_close(native, reference, rtol=1e-4, atol=1e-5)


def test_colour_encoding_is_selectable():
    fourier = DMTet(config=DMTetConfig(resolution=4, color_encoding="fourier"))
    assert fourier.color_field.encoding.__class__.__name__ == "FourierFeatures"
    with pytest.raises(ValueError, match="color_encoding"):
        DMTet(config=DMTetConfig(resolution=4, color_encoding="sh"))


def test_normal_consistency_pairs_every_two_faces_that_share_an_edge():
    """Against a reference that finds adjacent faces with a dict of edges, on a closed mesh."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=2)
    vertices = torch.tensor(sphere.vertices, dtype=torch.float32) * (1 + 0.1 * torch.rand(len(sphere.vertices), 1,
                                                                                          generator=torch.Generator().manual_seed(0)))
    faces = torch.tensor(sphere.faces, dtype=torch.int64)
    corners = vertices[faces]
    normals = torch.nn.functional.normalize(torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), dim=-1)
    by_edge = {}
    for f, (i, j, k) in enumerate(faces.tolist()):
        for a, b in ((i, j), (j, k), (k, i)):
            by_edge.setdefault((min(a, b), max(a, b)), []).append(f)
    pairs = [fs for fs in by_edge.values() if len(fs) == 2]
    assert len(pairs) == len(by_edge)  # closed: every edge has two faces
    expected = torch.stack([1 - (normals[a] * normals[b]).sum() for a, b in pairs]).mean()
    torch.testing.assert_close(normal_consistency(vertices, faces), expected, rtol=1e-5, atol=1e-6)
