"""Exports stand upright in other programs: GLB / OBJ +Y up with the front towards +Z (glTF), the
3DGS PLY in the convention asked for (default -Y up, front -Z); files read back into the world frame
(+z up, front +x) unchanged. Checked on the raw files with trimesh and plyfile."""

import numpy as np
import pytest
import torch
import trimesh
from plyfile import PlyData

from sds3d.axes import quaternion_multiply, rotate_gaussians, rotation_to_quaternion, sh_rotation, world_to_file
from sds3d.cuda._torch_gaussians import _quat_to_rotmat
from sds3d.representations import Gaussians, GaussiansConfig
from sds3d.representations.mesh import Mesh
from sds3d.representations.spherical_harmonics import evaluate_sh

# in the file frame of each convention: (up, front) unit vectors
FILE_AXES = {"+y": ([0, 1, 0], [0, 0, 1]), "-y": ([0, -1, 0], [0, 0, -1]), "+z": ([0, 0, 1], [1, 0, 0])}


def _signpost() -> trimesh.Trimesh:
    """A tall thin box (0.1 x 0.1 x 1 along z, the world's up) with a bump towards +x (its front)."""
    post = trimesh.creation.box(extents=(0.1, 0.1, 1.0))
    sign = trimesh.creation.box(extents=(0.3, 0.1, 0.1))
    sign.apply_translation((0.2, 0.0, 0.3))
    return trimesh.util.concatenate([post, sign])


def _assert_up_and_front(points: np.ndarray, up, front):
    """Points of the `_signpost` (about the origin, as exported) stand along `up` (their tallest
    extent) with the sign sticking out towards `front`, above the middle."""
    up, front = np.asarray(up, float), np.asarray(front, float)
    extents = points.max(0) - points.min(0)
    assert np.argmax(extents) == np.argmax(np.abs(up)), extents
    along_front, along_up = points @ front, points @ up
    assert along_front.max() > 0.25 and along_front.min() > -0.12, (along_front.min(), along_front.max())
    assert along_up[along_front > 0.2].mean() > 0.2, along_up[along_front > 0.2].mean()


def test_axis_rotations_are_proper_and_map_up_and_front():
    for up, (file_up, file_front) in FILE_AXES.items():
        R = world_to_file(up)
        torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=torch.float64))
        assert torch.linalg.det(R).item() == pytest.approx(1.0)
        assert R[:, 2].tolist() == file_up and R[:, 0].tolist() == file_front
        q = rotation_to_quaternion(R)
        torch.testing.assert_close(_quat_to_rotmat(q[None].float())[0].double(), R)


@pytest.mark.parametrize("suffix", [".glb", ".obj"])
def test_mesh_files_are_y_up_and_read_back_unchanged(tmp_path, suffix):
    mesh = Mesh.from_trimesh(_signpost())
    path = mesh.save(tmp_path / f"post{suffix}")
    raw = trimesh.load(path, force="mesh", process=False)
    _assert_up_and_front(np.asarray(raw.vertices), *FILE_AXES["+y"])
    back = Mesh.load(path)
    torch.testing.assert_close(back.positions.sort(0).values, mesh.positions.sort(0).values)


def test_textured_glb_export_of_gaussians_is_y_up(tmp_path):
    pytest.importorskip("xatlas")
    gaussians = Gaussians.from_mesh(_signpost(), 4000, GaussiansConfig(init_opacity=0.9))
    with torch.no_grad():
        gaussians.params["scales"].clamp_(max=float(np.log(0.02)))
    from sds3d.export import export_textured

    path = export_textured(gaussians, tmp_path / "post.glb", texture_size=64, resolution=48, max_faces=800)
    _assert_up_and_front(np.asarray(trimesh.load(path, force="mesh").vertices), *FILE_AXES["+y"])


@pytest.mark.parametrize("up", ["-y", "+y", "+z"])
def test_gaussian_ply_is_upright_in_its_convention_and_round_trips(tmp_path, up):
    g = torch.Generator().manual_seed(0)
    gaussians = Gaussians.from_mesh(_signpost(), 3000, GaussiansConfig(sh_degree=3))
    with torch.no_grad():
        for name in ("quats", "shN", "opacities"):
            gaussians.params[name].copy_(torch.randn(gaussians.params[name].shape, generator=g))
    path = gaussians.save_ply(tmp_path / "post.ply", up=up)
    vertex = PlyData.read(str(path))["vertex"]
    points = np.stack([vertex["x"], vertex["y"], vertex["z"]], 1)
    _assert_up_and_front(points, *FILE_AXES[up])
    back = Gaussians.load_ply(path)  # the header says which convention
    for name, value in gaussians.params.items():
        torch.testing.assert_close(back.params[name], value, rtol=1e-6, atol=1e-6, msg=name)


def test_rotated_gaussians_look_the_same_from_the_rotated_directions():
    """A Gaussian's shape (quaternion) and view-dependent colour (SH up to degree 3) turn with its
    position: covariance R S R^T, colour along R d equal to the old colour along d."""
    g = torch.Generator().manual_seed(1)
    means, quats = torch.randn(5, 3, generator=g), torch.randn(5, 4, generator=g)
    sh = torch.randn(5, 16, 3, generator=g)
    dirs = torch.randn(5, 3, generator=g)
    for up in ("-y", "+y"):
        R = world_to_file(up)
        new_means, new_quats, new_shN = rotate_gaussians(means, quats, sh[:, 1:], R)
        torch.testing.assert_close(new_means, means @ R.float().T)
        rot_old, rot_new = _quat_to_rotmat(quats), _quat_to_rotmat(new_quats)
        torch.testing.assert_close(rot_new, R.float() @ rot_old, atol=1e-6, rtol=1e-6)
        new_sh = torch.cat([sh[:, :1], new_shN], 1)
        torch.testing.assert_close(evaluate_sh(3, new_sh, dirs @ R.float().T), evaluate_sh(3, sh, dirs),
                                   atol=1e-5, rtol=1e-5)
    # the band matrices are orthogonal and undo each other
    M = sh_rotation(3, world_to_file("-y"))
    torch.testing.assert_close(M @ sh_rotation(3, world_to_file("-y").T), torch.eye(15, dtype=torch.float64))
    assert quaternion_multiply(torch.tensor([0.0, 1, 0, 0]), torch.tensor([0.0, 0, 1, 0])).tolist() == [0, 0, 0, 1]
