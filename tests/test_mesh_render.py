"""Mesh shading on top of the rasterizer: analytic silhouette antialiasing (coverage values, areas,
finite-difference gradients), UV texture sampling, colour fields, edge topology."""

import math

import pytest
import torch
import trimesh

from sds3d.cameras import Cameras, orbit_cameras
from sds3d.cuda.mesh_rasterizer import render_mesh
from sds3d.representations.mesh_render import EdgeTopology, render

pytestmark = pytest.mark.usefixtures("one_thread")

QUAD = torch.tensor([[0, 1, 2], [0, 2, 3]])


def _identity_camera(size: int = 32, focal: float = 32.0, centre: float = 16.0) -> Cameras:
    """Looks down +z from the origin: world (x, y) at depth z lands on pixel (f x / z + c, f y / z + c)."""
    K = torch.tensor([[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]])
    return Cameras(viewmats=torch.eye(4)[None], Ks=K[None], width=size, height=size)


def _rectangle(x0, x1, y0, y1, z=2.0, dtype=torch.float32):
    return torch.tensor([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=dtype)


@pytest.mark.parametrize("right_edge_pixel", [17.6, 17.76, 18.24, 18.5])
def test_axis_aligned_silhouette_gets_exact_coverage(right_edge_pixel):
    # camera: pixel u = 16 x + 16 at z = 2; the right edge crosses pixel column floor(u)
    x1 = (right_edge_pixel - 16) / 16
    out = render(_rectangle(-0.3, x1, -0.4, 0.45), QUAD, _identity_camera(), face_colors=torch.ones(2, 3))
    row = out.alpha[0, 16, :, 0]
    column = math.floor(right_edge_pixel)
    assert row[column - 1].item() == 1.0
    assert row[column].item() == pytest.approx(right_edge_pixel - column, abs=1e-5)
    assert row[column + 1:].abs().max().item() == 0.0
    sharp = render(_rectangle(-0.3, x1, -0.4, 0.45), QUAD, _identity_camera(), face_colors=torch.ones(2, 3),
                   antialias_silhouettes=False)
    assert set(sharp.alpha.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("angle", [10.0, 30.0, 45.0, 70.0])
def test_antialiased_coverage_sums_to_the_polygon_area(angle):
    """A rotated square of side 12.8 px: alpha summed over the image ~ its area (163.84 px^2)."""
    a = math.radians(angle)
    rotation = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    corners = torch.tensor([[-0.4, -0.4], [0.4, -0.4], [0.4, 0.4], [-0.4, 0.4]]) @ rotation.T + 0.013
    vertices = torch.cat([corners, torch.full((4, 1), 2.0)], 1)
    out = render(vertices, QUAD, _identity_camera(), face_colors=torch.ones(2, 3))
    assert out.alpha.sum().item() == pytest.approx(0.8 * 16 * 0.8 * 16, abs=0.7)
    assert out.alpha.min() >= 0 and out.alpha.max() <= 1


def test_silhouette_gradients_match_finite_differences():
    sphere = trimesh.creation.icosphere(subdivisions=1, radius=0.5)
    vertices = torch.tensor(sphere.vertices, dtype=torch.float64)
    faces = torch.tensor(sphere.faces)
    cameras = orbit_cameras([10.0, 40.0], [0.0, 100.0], 2.5, 40.0, 24)
    colors = torch.rand(len(faces), 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    target = render(vertices * 0.9 + 0.03, faces, cameras, face_colors=colors).alpha

    def loss(v, antialias=True):
        out = render(v, faces, cameras, face_colors=colors, antialias_silhouettes=antialias,
                     background=torch.tensor([0.2, 0.4, 0.9], dtype=torch.float64))
        return ((out.alpha - target) ** 2).sum() + 0.1 * (out.rgb ** 2).sum()

    v = vertices.clone().requires_grad_()
    loss(v).backward()
    grad = v.grad.flatten()
    assert (v.grad.abs().sum(1) > 0).sum() > 10  # silhouette vertices move the loss
    eps = 1e-5
    for i in grad.abs().argsort(descending=True)[:10].tolist() + [0, 40, 77]:
        step = torch.zeros(vertices.numel(), dtype=torch.float64)
        step[i] = eps
        step = step.view_as(vertices)
        numeric = (loss(vertices + step) - loss(vertices - step)) / (2 * eps)
        assert grad[i].item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-6)

    # without antialiasing alpha is piecewise constant: no silhouette gradient at all
    v = vertices.clone().requires_grad_()
    out = render(v, faces, cameras, face_colors=colors, antialias_silhouettes=False)
    assert not out.alpha.requires_grad


def test_uv_texture_bilinear_lookup_is_exact_on_linear_ramps():
    """Texture red = u and green = v at texel centres (v up: row 0 is v ~ 1), so bilinear lookup
    returns the pixel's own (u, v) on the quad, which the camera maps linearly."""
    Ht, Wt = 8, 16
    u = (torch.arange(Wt) + 0.5) / Wt
    v = 1 - (torch.arange(Ht) + 0.5) / Ht
    texture = torch.stack([u[None].expand(Ht, Wt), v[:, None].expand(Ht, Wt), torch.zeros(Ht, Wt)], -1)
    x0, x1, y0, y1 = -0.5, 0.5, -0.4, 0.4  # image top is y0 (OpenCV y down): v = 1 there
    uvs = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    out = render(_rectangle(x0, x1, y0, y1), QUAD, _identity_camera(), uvs=uvs, texture=texture, ambient=1.0,
                 diffuse=0.0, antialias_silhouettes=False)
    ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    expected_u = ((xs - 16) / 16 - x0) / (x1 - x0)
    expected_v = (y1 - (ys - 16) / 16) / (y1 - y0)
    inner = ((expected_u > 0.5 / Wt) & (expected_u < 1 - 0.5 / Wt) & (expected_v > 0.5 / Ht)
             & (expected_v < 1 - 0.5 / Ht))
    assert inner.sum() > 150
    torch.testing.assert_close(out.rgb[0, ..., 0][inner], expected_u[inner], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.rgb[0, ..., 1][inner], expected_v[inner], rtol=0, atol=1e-5)


def test_color_field_equals_interpolated_vertex_colors_for_a_linear_field():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    vertices = torch.tensor(sphere.vertices, dtype=torch.float32)
    faces = torch.tensor(sphere.faces)
    cameras = orbit_cameras([0.0, 30.0], [20.0, 200.0], 2.5, 40.0, 32)

    def field(points):
        return 0.5 + 0.4 * points @ torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])

    a = render(vertices, faces, cameras, color_fn=field)
    b = render(vertices, faces, cameras, vertex_colors=field(vertices))
    torch.testing.assert_close(a.rgb, b.rgb, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.alpha, b.alpha)


def test_without_antialiasing_matches_the_rasterizer_render():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    vertices, faces = torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces)
    colors = torch.rand(len(faces), 3, generator=torch.Generator().manual_seed(1))
    cameras = orbit_cameras([15.0, -20.0], [0.0, 135.0], 3.0, 45.0, 40, 32)
    light = torch.tensor([0.0, 0.6, 0.8])
    ours = render(vertices, faces, cameras, face_colors=colors, light_dirs=light, antialias_silhouettes=False,
                  background=torch.tensor([0.1, 0.2, 0.3]))
    reference = render_mesh(vertices, faces, cameras, face_colors=colors, light_dirs=light, background=(0.1, 0.2, 0.3))
    for name in ("rgb", "alpha", "depth", "normal"):
        torch.testing.assert_close(getattr(ours, name), getattr(reference, name), rtol=0, atol=1e-6)


def test_edge_topology_of_a_closed_mesh_pairs_every_edge():
    sphere = trimesh.creation.icosphere(subdivisions=1)
    faces = torch.tensor(sphere.faces)
    topology = EdgeTopology.from_faces(faces)
    neighbor, corner = topology.neighbor_face, topology.neighbor_corner
    assert (neighbor >= 0).all()
    f, k = torch.meshgrid(torch.arange(len(faces)), torch.arange(3), indexing="ij")
    # across the neighbour's edge lies the face itself, and the shared edge has the same end points
    assert torch.equal(neighbor[neighbor, corner], f)
    ends = lambda face, c: {int(faces[face, (c + 1) % 3]), int(faces[face, (c + 2) % 3])}  # noqa: E731
    for face, c in zip(f.flatten().tolist()[:60], k.flatten().tolist()[:60]):
        assert ends(face, c) == ends(int(neighbor[face, c]), int(corner[face, c]))
        assert int(faces[neighbor[face, c], corner[face, c]]) not in ends(face, c)

    single = EdgeTopology.from_faces(torch.tensor([[0, 1, 2]]))
    assert (single.neighbor_face == -1).all() and (single.neighbor_corner == -1).all()
    fan = EdgeTopology.from_faces(torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4]]))  # edge 0-1 in 3 faces
    assert (fan.neighbor_face[:, 2] == -1).all()
