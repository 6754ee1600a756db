"""Axis conventions of exported files, and the rotations between them and the world frame.

sds3d's world frame (`sds3d.cameras`): +z up, the object's front faces +x, +y is its left. Files
are written in the convention of their format and read back into the world frame:

- ``"+y"``: glTF 2.0 (and the usual OBJ reading: three.js, Babylon.js, Blender's importer):
  +Y up, front +Z, +X the object's left.
- ``"-y"``: 3DGS PLY as trained from COLMAP (OpenCV camera axes, y down): -Y up, front -Z, +X the
  object's right. SuperSplat (which turns PLYs 180 degrees about Z on import), antimatter15/splat
  and gsplat.js (the web UI's viewer, gradio's Model3D) show such files upright.
- ``"+z"``: the world frame unchanged (Blender's native axes; gsplat's viser viewer).

All three are proper rotations (no mirroring), so triangle winding and Gaussian shapes survive.
"""

from __future__ import annotations

import math

import torch

UP_AXES = ("-y", "+y", "+z")

# rows: the file's x, y, z in world coordinates, so file = R @ world
_ROTATIONS = {
    "+y": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)),
    "-y": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0), (-1.0, 0.0, 0.0)),
    "+z": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
}


def world_to_file(up: str) -> torch.Tensor:
    """[3, 3] float64 rotation R with file coordinates = R @ world coordinates."""
    if up not in _ROTATIONS:
        raise ValueError(f"unknown up axis {up!r}; choose one of {', '.join(UP_AXES)}")
    return torch.tensor(_ROTATIONS[up], dtype=torch.float64)


def rotation_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Proper rotation [3, 3] -> unit quaternion (w, x, y, z) [4], w >= 0 (Shepperd's method)."""
    R = R.double()
    trace = R.trace()
    diagonal = torch.stack([trace, R[0, 0], R[1, 1], R[2, 2]])
    k = int(diagonal.argmax())
    if k == 0:
        w = math.sqrt(1 + trace) / 2
        q = [w, (R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w), (R[1, 0] - R[0, 1]) / (4 * w)]
    else:
        i, j, m = k - 1, k % 3, (k + 1) % 3
        s = math.sqrt(1 + R[i, i] - R[j, j] - R[m, m]) * 2  # 4 |q_i|
        q = [0.0] * 4
        q[0] = (R[m, j] - R[j, m]) / s
        q[1 + i] = s / 4
        q[1 + j] = (R[j, i] + R[i, j]) / s
        q[1 + m] = (R[m, i] + R[i, m]) / s
    q = torch.tensor([float(v) for v in q], dtype=torch.float64)
    return q if q[0] >= 0 else -q


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a b of quaternions (w, x, y, z) [..., 4] (rotation b, then a)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def sh_rotation(degree: int, R: torch.Tensor) -> torch.Tensor:
    """[(d + 1)^2 - 1] x [same] float64 matrix M taking the non-DC SH coefficients of a colour
    field to those of the field rotated by R: sum_k (M c)_k Y_k(R u) = sum_k c_k Y_k(u) for every
    direction u. Solved exactly by least squares on 64 directions (each band is rotation invariant)."""
    from sds3d.representations.spherical_harmonics import sh_basis

    index = torch.arange(64, dtype=torch.float64) + 0.5  # Fibonacci sphere
    z = 1 - 2 * index / 64
    phi = math.pi * (1 + 5 ** 0.5) * index
    dirs = torch.stack([(1 - z ** 2).sqrt() * phi.cos(), (1 - z ** 2).sqrt() * phi.sin(), z], -1)
    new_basis = sh_basis(degree, dirs)[:, 1:]  # Y(u') at u' = R u for u = R^T u'
    old_basis = sh_basis(degree, dirs @ R.double())[:, 1:]  # Y(R^T u') (row vectors: u' R = (R^T u')^T)
    return torch.linalg.lstsq(new_basis, old_basis).solution


def rotate_gaussians(means: torch.Tensor, quats: torch.Tensor, shN: torch.Tensor, R: torch.Tensor):
    """means [N, 3], quats (w, x, y, z) [N, 4], shN [N, K, 3] (K = (d + 1)^2 - 1) of Gaussians,
    rotated by R [3, 3] about the origin -> the same three, float32. Quaternions keep their norm."""
    means = (means.double() @ R.double().T).float()
    quats = quaternion_multiply(rotation_to_quaternion(R).expand_as(quats), quats.double()).float()
    if shN.shape[1]:
        degree = round(math.sqrt(shN.shape[1] + 1)) - 1
        shN = torch.einsum("kj,njc->nkc", sh_rotation(degree, R), shN.double()).float()
    return means, quats, shN


__all__ = ["UP_AXES", "world_to_file", "rotation_to_quaternion", "quaternion_multiply", "sh_rotation",
           "rotate_gaussians"]
