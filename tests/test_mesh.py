"""The explicit Mesh representation: colours from files, welded geometry, persistence, sampling."""

import numpy as np
import pytest
import torch
import trimesh

from sds3d.cameras import orbit_cameras, turntable_cameras
from sds3d.cuda.mesh_rasterizer import render_trimesh
from sds3d.representations.mesh import Mesh, MeshConfig
from sds3d.world import make_object

pytestmark = pytest.mark.usefixtures("one_thread")


def _cameras(width=48):
    return orbit_cameras([20.0, 35.0, -5.0], [0.0, 120.0, -150.0], 2.5, 40.0, width)


def test_face_colours_become_split_vertex_colours_that_render_identically():
    truth = make_object("house", "blue").mesh  # parts in different colours, shared by nothing
    mesh = Mesh.from_trimesh(truth, MeshConfig(antialias=False))
    cameras = _cameras()
    ours = mesh.render(cameras)
    reference = render_trimesh(truth, cameras)
    torch.testing.assert_close(ours.rgb, reference.rgb, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.alpha, reference.alpha)
    # every vertex now has one colour: each face's three vertex colours equal its face colour
    face_colors = torch.tensor(truth.visual.face_colors[:, :3] / 255.0, dtype=torch.float32)
    torch.testing.assert_close(mesh.vertex_colors[mesh.faces], face_colors[:, None].expand(-1, 3, -1))
    assert len(mesh.positions) == len(np.unique(truth.vertices, axis=0))


def test_seams_are_welded_for_geometry_and_silhouettes():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    seamed = sphere.copy()
    seamed.unmerge_vertices()  # every face has its own three vertices
    mesh = Mesh(torch.tensor(seamed.vertices), torch.tensor(seamed.faces), config=MeshConfig(lr_positions=1e-2))
    assert len(mesh.vertices) == 3 * len(sphere.faces) and len(mesh.positions) == len(sphere.vertices)
    assert (mesh.topology.neighbor_face >= 0).all()  # closed: no edge is a boundary

    with torch.no_grad():
        target = Mesh(torch.tensor(sphere.vertices) * 1.2, torch.tensor(sphere.faces)).render(_cameras(32)).alpha
    optimizer = mesh.make_optimizers()["positions"]
    for _ in range(5):
        loss = ((mesh.render(_cameras(32)).alpha - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    corners = mesh.vertices[mesh.faces].detach()
    grown = trimesh.Trimesh(corners.reshape(-1, 3).numpy(), np.arange(corners.shape[0] * 3).reshape(-1, 3))
    grown.merge_vertices()
    assert len(grown.vertices) == len(sphere.vertices)  # no seam opened
    assert mesh.positions.norm(dim=-1).mean() > 0.5  # it grew towards the larger target


def test_param_groups_follow_the_colour_mode_and_freeze_geometry():
    cube = trimesh.creation.box()
    mesh = Mesh(torch.tensor(cube.vertices), torch.tensor(cube.faces), config=MeshConfig(lr_positions=0.0))
    assert [g["name"] for g in mesh.param_groups()] == ["colors"] and not mesh.positions.requires_grad
    textured = Mesh(torch.tensor(cube.vertices), torch.tensor(cube.faces), uvs=torch.rand(8, 2),
                    texture=torch.rand(4, 4, 3))
    groups = {g["name"]: g["params"][0] for g in textured.param_groups()}
    assert groups["colors"] is textured.texture and groups["positions"] is textured.positions


@pytest.mark.parametrize("suffix", [".ply", ".glb", ".obj"])
def test_vertex_coloured_mesh_round_trips_through_files(tmp_path, suffix):
    truth = make_object("mug", "green").mesh
    mesh = Mesh.from_trimesh(truth)
    path = mesh.save(tmp_path / f"mug{suffix}")
    back = Mesh.load(path)
    cameras = turntable_cameras(4, width=40)
    with torch.no_grad():
        torch.testing.assert_close(back.render(cameras).rgb, mesh.render(cameras).rgb, rtol=0, atol=2e-6)


def test_textured_mesh_round_trips_through_glb_and_obj(tmp_path):
    g = torch.Generator().manual_seed(3)
    box = trimesh.creation.box(extents=(0.8, 0.6, 0.7))
    box.unmerge_vertices()
    mesh = Mesh(torch.tensor(box.vertices), torch.tensor(box.faces), uvs=torch.rand(len(box.vertices), 2, generator=g),
                texture=torch.randint(0, 256, (16, 12, 3), generator=g) / 255.0)
    cameras = turntable_cameras(4, width=40)
    for name in ("box.glb", "box.obj"):
        path = mesh.save(tmp_path / name)
        loaded = trimesh.load(path, force="mesh")
        assert loaded.visual.kind == "texture" and loaded.visual.uv.shape == (len(loaded.vertices), 2)
        back = Mesh.load(path)
        torch.testing.assert_close(back.texture, mesh.texture, rtol=0, atol=1e-6)
        with torch.no_grad():
            torch.testing.assert_close(back.render(cameras).rgb, mesh.render(cameras).rgb, rtol=0, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box.glb", "box.mtl", "box.obj", "box.png"]


def test_surface_samples_are_area_uniform_and_carry_the_surface_colour():
    # two triangles, areas 1 and 3, red and blue
    vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 1], [3, 0, 1], [0, 2, 1]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    colors = torch.tensor([[1.0, 0, 0]] * 3 + [[0, 0, 1.0]] * 3)
    mesh = Mesh(vertices, faces, colors)
    points, normals, sample_colors, face_ids, bary = mesh.sample_surface(20000, torch.Generator().manual_seed(0))
    assert (face_ids == 1).float().mean().item() == pytest.approx(0.75, abs=0.015)
    torch.testing.assert_close(points[:, 2], face_ids.float())
    legs = torch.where(face_ids == 1, 3.0, 1.0)  # x extent of each triangle; both reach y = 2
    assert (bary >= 0).all() and (points[:, 0] / legs + points[:, 1] / 2 <= 1 + 1e-6).all()
    torch.testing.assert_close(normals, torch.tensor([0.0, 0.0, 1.0]).expand(20000, 3))
    torch.testing.assert_close(sample_colors, colors[3 * face_ids])
    # uniform inside a triangle: the mean of the samples is the centroid
    torch.testing.assert_close(points[face_ids == 1].mean(0), torch.tensor([1.0, 2 / 3, 1.0]), rtol=0, atol=0.03)
