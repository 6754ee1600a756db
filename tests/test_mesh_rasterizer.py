"""Mesh rasterizer: native visibility vs the PyTorch reference, barycentrics, gradients, shading.

The CUDA path (the reference visibility on CUDA tensors) is not tested here: no GPU.
"""

import math

import pytest
import torch
import trimesh

from sds3d.cameras import Cameras, orbit_cameras
from sds3d.cuda.mesh_rasterizer import (fragments_from_face_ids, interpolate, rasterize_mesh, render_mesh,
                                        render_trimesh, visibility)


def _soup(seed: int, n_faces: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unconnected triangles of mixed sizes (tiny to larger than the view) around the origin; with
    cameras at radius 2 some lie partly off-screen, cross the near plane or are behind the camera."""
    g = torch.Generator().manual_seed(seed)
    centres = (torch.rand(n_faces, 1, 3, generator=g) - 0.5) * 3.0
    sizes = torch.tensor([0.005, 0.05, 0.05, 0.3, 0.3, 0.3, 2.0])[torch.randint(0, 7, (n_faces,), generator=g)]
    vertices = centres + torch.randn(n_faces, 3, 3, generator=g) * sizes[:, None, None]
    return vertices.reshape(-1, 3), torch.arange(3 * n_faces).reshape(n_faces, 3)


def _noisy_sphere(seed: int, subdivisions: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A closed mesh with shared edges, vertices jittered radially."""
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    g = torch.Generator().manual_seed(seed)
    vertices = torch.tensor(sphere.vertices, dtype=torch.float32)
    vertices = vertices * (1 + 0.1 * torch.rand(len(vertices), 1, generator=g))
    return vertices, torch.tensor(sphere.faces)


def _pixel_grid() -> tuple[torch.Tensor, torch.Tensor]:
    """A grid of front-facing quads before the identity camera with vertices exactly on pixel
    centres and edges, every face duplicated (equal depth ties: the lower id must win)."""
    steps = torch.arange(5, dtype=torch.float32)
    y, x = torch.meshgrid(steps, steps, indexing="ij")
    z = torch.full_like(x, 2.0)
    # camera with f = 16, cx = cy = 16: world (x, y) at z = 2 lands on pixel coordinate 8 x + 16
    vertices = torch.stack([(x * 4 - 8.5) / 8, (y * 4 - 8) / 8, z], -1).reshape(-1, 3)
    quads = [(5 * r + c, 5 * r + c + 1, 5 * r + c + 6, 5 * r + c + 5) for r in range(4) for c in range(4)]
    faces = torch.tensor([tri for a, b, c, d in quads for tri in ((a, c, b), (a, d, c))])
    return vertices, torch.cat([faces, faces])


def _identity_camera(width: int, focal: float, centre: float, batch: int = 1) -> Cameras:
    K = torch.tensor([[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]])
    return Cameras(viewmats=torch.eye(4).repeat(batch, 1, 1), Ks=K.repeat(batch, 1, 1), width=width, height=width)


def _random_cameras(seed: int, batch: int = 3, width: int = 40, height: int = 32, radius: float = 2.0) -> Cameras:
    g = torch.Generator().manual_seed(seed)
    return orbit_cameras(torch.rand(batch, generator=g) * 120 - 60, torch.rand(batch, generator=g) * 360 - 180,
                         radius, 50.0, width, height)


def _assert_same_visibility(native, reference):
    """Both backends perform the same float32 operations: ids and depths must agree exactly."""
    assert torch.equal(native[0], reference[0])
    assert torch.equal(native[1], reference[1])


SCENES = {
    "soup": lambda seed: (*_soup(seed, 300), _random_cameras(seed)),
    "sphere": lambda seed: (*_noisy_sphere(seed), _random_cameras(seed, radius=2.5)),
    "grid": lambda seed: (*_pixel_grid(), _identity_camera(32, 16.0, 16.0)),
}


@pytest.mark.parametrize("cull_backfaces", [False, True])
@pytest.mark.parametrize("scene,seed", [("soup", 0), ("soup", 1), ("soup", 2), ("sphere", 3), ("sphere", 4),
                                        ("grid", 0)])
def test_native_matches_reference(scene, seed, cull_backfaces):
    vertices, faces, cameras = SCENES[scene](seed)
    native = visibility(vertices, faces, cameras, cull_backfaces=cull_backfaces, backend="native")
    reference = visibility(vertices, faces, cameras, cull_backfaces=cull_backfaces, backend="reference")
    assert native[0].shape == (len(cameras), cameras.height, cameras.width)
    assert native[0].unique().numel() > 10
    _assert_same_visibility(native, reference)


def test_native_matches_reference_per_camera_vertices():
    vertices, faces = _soup(5, 200)
    cameras = _random_cameras(5, batch=2)
    per_camera = torch.stack([vertices, vertices + torch.tensor([0.1, -0.2, 0.05])])
    _assert_same_visibility(visibility(per_camera, faces, cameras, backend="native"),
                            visibility(per_camera, faces, cameras, backend="reference"))
    first = visibility(vertices, faces, cameras[0], backend="native")
    torch.testing.assert_close(visibility(per_camera, faces, cameras, backend="native")[0][:1], first[0])


def test_equal_depth_ties_pick_lower_id_and_shared_edges_leave_no_holes():
    vertices, faces = _pixel_grid()
    face_ids, _ = visibility(vertices, faces, _identity_camera(32, 16.0, 16.0), backend="native")
    assert face_ids.max() < len(faces) // 2
    covered = face_ids[0] >= 0  # the grid spans pixel coordinates [7.5, 23.5] x [8, 24]
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[8:24, 7:23] = True
    assert torch.equal(covered, expected)


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("centre", [16.0, 16.5])
def test_unit_square_covers_expected_pixels(backend, centre):
    """A unit quad at z = 2 with f = 32 spans 16 px; with centre 16.5 its edges pass through pixel
    centres and the top-left rule keeps the left and top ones only."""
    vertices = torch.tensor([[-0.5, -0.5, 2.0], [0.5, -0.5, 2.0], [0.5, 0.5, 2.0], [-0.5, 0.5, 2.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    fragments = rasterize_mesh(vertices, faces, _identity_camera(32, 32.0, centre), backend=backend)
    expected = torch.zeros(1, 32, 32, dtype=torch.bool)
    expected[:, 8:24, 8:24] = True
    assert torch.equal(fragments.mask, expected)
    torch.testing.assert_close(fragments.depth[fragments.mask], torch.full((256,), 2.0))


def test_sphere_silhouette_area():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    vertices = torch.tensor(sphere.vertices, dtype=torch.float32) + torch.tensor([0.0, 0.0, 3.0])
    fragments = rasterize_mesh(vertices, torch.tensor(sphere.faces), _identity_camera(64, 64.0, 32.0))
    radius_px = 64.0 * 1.0 / math.sqrt(3.0**2 - 1.0)  # tangent cone of a sphere at distance 3
    assert fragments.mask.sum().item() == pytest.approx(math.pi * radius_px**2, rel=0.03)


def test_near_plane_skips_whole_triangles():
    vertices = torch.tensor([[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 1.0, 0.005]])
    faces = torch.tensor([[0, 1, 2]])
    camera = _identity_camera(16, 8.0, 8.0)
    for backend in ("native", "reference"):
        assert not visibility(vertices, faces, camera, backend=backend)[0].ge(0).any()
        assert visibility(vertices, faces, camera, near=0.001, backend=backend)[0].ge(0).any()


def test_backface_culling_on_closed_mesh():
    vertices, faces = _noisy_sphere(7)
    cameras = _random_cameras(7, radius=3.0)
    both = rasterize_mesh(vertices, faces, cameras)
    culled = rasterize_mesh(vertices, faces, cameras, cull_backfaces=True)
    assert torch.equal(both.face_ids, culled.face_ids)
    inside_out = rasterize_mesh(vertices, faces[:, [0, 2, 1]], cameras, cull_backfaces=True)
    assert torch.equal(inside_out.mask, both.mask)  # the far half of the sphere, seen from inside
    assert (inside_out.depth[both.mask] > both.depth[both.mask]).float().mean() > 0.99


def test_barycentrics_reconstruct_surface_points():
    vertices, faces = _noisy_sphere(8)
    cameras = _random_cameras(8, radius=2.5)
    fragments = rasterize_mesh(vertices, faces, cameras)
    mask = fragments.mask
    torch.testing.assert_close(fragments.bary.sum(-1)[mask], torch.ones(int(mask.sum())))
    assert (fragments.bary[~mask] == 0).all() and (fragments.depth[~mask] == 0).all()
    assert fragments.bary[mask].min() > -1e-4

    points = interpolate(vertices, fragments, faces)  # [B, H, W, 3] world
    rotation, translation = cameras.viewmats[:, :3, :3], cameras.viewmats[:, None, None, :3, 3]
    camera_points = torch.einsum("bij,bhwj->bhwi", rotation, points) + translation
    torch.testing.assert_close(camera_points[..., 2][mask], fragments.depth[mask], rtol=1e-5, atol=1e-5)
    pixels = torch.einsum("bij,bhwj->bhwi", cameras.Ks, camera_points)
    pixels = pixels[..., :2] / pixels[..., 2:]
    b, y, x = mask.nonzero(as_tuple=True)
    torch.testing.assert_close(pixels[b, y, x], torch.stack([x, y], -1).float() + 0.5, rtol=0, atol=1e-3)
    _, raster_depth = visibility(vertices, faces, cameras)
    torch.testing.assert_close(fragments.depth, raster_depth, rtol=1e-5, atol=0)
    ones = interpolate(torch.ones(len(vertices), 2), fragments, faces)
    torch.testing.assert_close(ones, mask[..., None].float().expand(-1, -1, -1, 2))


def test_gradients_of_interpolation_and_depth():
    """gradcheck in float64 with the visibility computed once and held fixed."""
    vertices = torch.tensor([[0.1, -0.6, -0.5], [-0.1, 0.7, -0.4], [0.0, -0.1, 0.6], [0.2, 0.6, 0.55]],
                            dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    cameras = orbit_cameras([0.0, 20.0], [0.0, 30.0], 3.0, 30.0, 8)
    face_ids, _ = visibility(vertices, faces, cameras)
    assert (face_ids == 0).any() and (face_ids == 1).any()
    attributes = torch.rand(4, 2, dtype=torch.float64)

    def render(vertices, attributes):
        fragments = fragments_from_face_ids(vertices, faces, cameras, face_ids)
        return interpolate(attributes, fragments, faces), fragments.depth

    inputs = (vertices.clone().requires_grad_(), attributes.requires_grad_())
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-6)
    vertices.requires_grad_()
    rasterize_mesh(vertices, faces, cameras).depth.sum().backward()
    assert vertices.grad.abs().sum() > 0


def test_cube_face_lit_along_its_normal_has_ambient_plus_diffuse():
    cube = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    cube.visual.face_colors = (200, 100, 50, 255)
    color = torch.tensor([200, 100, 50]) / 255.0
    cameras = orbit_cameras(30.0, 30.0, 4.0, 40.0, 48)  # sees the +x, +y and +z faces
    image = render_trimesh(cube, cameras, light_dirs=torch.tensor([[1.0, 0.0, 0.0]]), ambient=0.3, diffuse=0.5,
                           background=(0.0, 0.5, 1.0))
    face_ids = image.meta["fragments"].face_ids[0]
    face_normals = torch.tensor(cube.face_normals, dtype=torch.float32)
    rgb = image.rgb[0]
    for axis, shade in ((0, 0.8), (1, 0.3), (2, 0.3)):
        on_face = (face_ids >= 0) & (face_normals[face_ids.clamp(min=0), axis] > 0.5)
        assert on_face.sum() > 20
        torch.testing.assert_close(rgb[on_face], (color * shade).expand(int(on_face.sum()), 3), rtol=0, atol=1e-6)
        torch.testing.assert_close(image.normal[0][on_face], torch.eye(3)[axis].expand(int(on_face.sum()), 3))
    torch.testing.assert_close(rgb[face_ids < 0], torch.tensor([0.0, 0.5, 1.0]).expand(int((face_ids < 0).sum()), 3))
    assert torch.equal(image.alpha[0, ..., 0], (face_ids >= 0).float())


def test_antialias_supersamples_coverage():
    vertices = torch.tensor([[-0.3, -0.45, 2.0], [0.55, -0.45, 2.0], [0.55, 0.5, 2.0], [-0.3, 0.5, 2.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    camera = _identity_camera(32, 32.0, 16.2)
    image = render_mesh(vertices, faces, camera, antialias=True)
    assert image.rgb.shape == (1, 32, 32, 3) and image.depth.shape == (1, 32, 32, 1)
    assert set(image.alpha.unique().tolist()) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    # edges at u = 11.4, 25.0 and v = 9.0, 24.2; samples at quarter pixels: 27 x 30 inside
    assert image.alpha.sum().item() == pytest.approx(27 * 30 / 4)
    torch.testing.assert_close(image.depth[image.alpha > 0], torch.full((int((image.alpha > 0).sum()),), 2.0))
    sharp = render_mesh(vertices, faces, camera)
    inner = image.alpha[..., 0] == 1
    torch.testing.assert_close(image.rgb[inner], sharp.rgb[inner])


def test_reference_backend_gives_the_same_render():
    vertices, faces = _noisy_sphere(9)
    cameras = _random_cameras(9, radius=2.5)
    colors = torch.rand(len(faces), 3, generator=torch.Generator().manual_seed(9))
    native = render_mesh(vertices, faces, cameras, face_colors=colors, backend="native")
    reference = render_mesh(vertices, faces, cameras, face_colors=colors, backend="reference")
    assert torch.equal(native.meta["fragments"].face_ids, reference.meta["fragments"].face_ids)
    for name in ("rgb", "alpha", "depth", "normal"):
        assert torch.equal(getattr(native, name), getattr(reference, name)), name
