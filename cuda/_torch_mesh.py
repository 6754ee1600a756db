"""PyTorch reference twin of the mesh visibility pass (`csrc/mesh_raster.cpp`, `csrc/mesh_math.h`).

Dense: every pixel x triangle pair is considered (a bounding-box test on all of them, edge functions
on the pairs that pass), in chunks of triangles to bound memory. Meant for small meshes, as the test
oracle, and for tensors on devices without a native kernel (CUDA). It performs the same float32
operations in the same order as the C++ kernel, so both pick the same triangle for every pixel: the
nearest covering triangle, the lower id at equal depth.

Conventions (shared with the kernel): OpenCV cameras, pixel (x, y) has its centre at
(x + 0.5, y + 0.5), triangles with a vertex closer than `near` are skipped (not clipped), coverage
by edge functions with the top-left rule, depth = perspective-correct camera-space z.
"""

from __future__ import annotations

import torch


def project_points(vertices: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor):
    """[1 or B, V, 3] world points -> pixel coordinates u, v and camera-space depth z, each [B, V].

    Same operation order as `sds3d::project_point`; differentiable, works in any float dtype."""
    X, Y, Z = vertices.unbind(-1)
    M = viewmats[:, :3, :, None]  # [B, 3, 4, 1] broadcasts against [1 or B, V]
    xc, yc, z = (((M[:, i, 0] * X + M[:, i, 1] * Y) + M[:, i, 2] * Z) + M[:, i, 3] for i in range(3))
    K = Ks[:, :, :, None]
    u = (K[:, 0, 0] * xc + K[:, 0, 1] * yc) / z + K[:, 0, 2]
    v = (K[:, 1, 1] * yc) / z + K[:, 1, 2]
    return u, v, z


def _setup_triangles(u, v, z, faces, near, cull_backfaces):
    """Per camera and triangle ([B, F] / per edge [B, F, 3]) what `setup_triangle` computes;
    edge k is opposite vertex k and runs from vertex k+1 to vertex k+2."""
    tu, tv, tz = u[:, faces], v[:, faces], z[:, faces]  # [B, F, 3]
    area = (tu[..., 1] - tu[..., 0]) * (tv[..., 2] - tv[..., 0]) - (tv[..., 1] - tv[..., 0]) * (tu[..., 2] - tu[..., 0])
    visible = (tz >= near).all(-1) & ((area > 0) | (area < 0))
    if cull_backfaces:
        visible &= ~(area > 0)
    orientation = torch.where(area > 0, 1.0, -1.0).to(tu.dtype)[..., None]  # [B, F, 1]

    ua, va = tu[..., [1, 2, 0]], tv[..., [1, 2, 0]]  # edge start points
    ub, vb = tu[..., [2, 0, 1]], tv[..., [2, 0, 1]]  # edge end points
    swap = (ub < ua) | ((ub == ua) & (vb < va))
    flip = torch.where(swap, -orientation, orientation)
    normal_x = orientation * -(vb - va)
    normal_y = orientation * (ub - ua)
    return {
        "visible": visible,
        "lo_x": torch.where(swap, ub, ua), "lo_y": torch.where(swap, vb, va),
        "dx": flip * torch.where(swap, ua - ub, ub - ua), "dy": flip * torch.where(swap, va - vb, vb - va),
        "top_left": (normal_x > 0) | ((normal_x == 0) & (normal_y > 0)),
        "inv_z": 1.0 / tz,
        "x0": torch.ceil(tu.amin(-1) - 0.5), "x1": torch.floor(tu.amax(-1) - 0.5),
        "y0": torch.ceil(tv.amin(-1) - 0.5), "y1": torch.floor(tv.amax(-1) - 0.5),
    }


def _chunk_depth(tri: dict, width: int, height: int) -> torch.Tensor:
    """Depth of each triangle of a chunk at each pixel, inf where it does not cover the pixel.
    tri: [B, C] / [B, C, 3] tensors -> [B, H, W, C]. As in the kernel, only pixels inside a
    triangle's bounding box are candidates; edge functions are evaluated for those pairs only."""
    device = tri["dx"].device
    x = torch.arange(width, dtype=torch.float32, device=device)[None, :, None]  # [1, W, 1]
    y = torch.arange(height, dtype=torch.float32, device=device)[None, :, None]  # [1, H, 1]
    in_rows = (y >= tri["y0"][:, None]) & (y <= tri["y1"][:, None])  # [B, H, C]
    in_cols = (x >= tri["x0"][:, None]) & (x <= tri["x1"][:, None]) & tri["visible"][:, None]  # [B, W, C]
    b, py, px, c = (in_rows[:, :, None] & in_cols[:, None, :]).nonzero(as_tuple=True)  # [N] candidates
    pair = {key: value[b, c] for key, value in tri.items()}  # [N] / [N, 3]
    centre_x = (px.to(torch.float32) + 0.5)[:, None]
    centre_y = (py.to(torch.float32) + 0.5)[:, None]
    e = pair["dx"] * (centre_y - pair["lo_y"]) - pair["dy"] * (centre_x - pair["lo_x"])  # [N, 3]
    covered = torch.where(pair["top_left"], e >= 0, e > 0).all(-1)
    (e0, e1, e2), inv_z = e.unbind(-1), pair["inv_z"]
    depth = ((e0 + e1) + e2) / ((e0 * inv_z[:, 0] + e1 * inv_z[:, 1]) + e2 * inv_z[:, 2])
    B, C = tri["visible"].shape
    out = torch.full((B, height, width, C), torch.inf, device=device)
    return out.index_put_((b, py, px, c), torch.where(covered, depth, torch.inf))


def visibility(vertices: torch.Tensor, faces: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor,
               width: int, height: int, near: float, cull_backfaces: bool, chunk_elements: int = 1 << 21):
    """vertices [1 or B, V, 3], faces [F, 3] int64, viewmats [B, 4, 4], Ks [B, 3, 3] ->
    (face_ids [B, H, W] int64, -1 on background; depth [B, H, W] float32, 0 on background).

    Computed in float32 whatever the input dtype. At most `chunk_elements` pixel x triangle pairs
    are held at once: 5 bytes each, plus about 100 per pair inside a bounding box."""
    f32 = torch.float32
    u, v, z = project_points(vertices.to(f32), viewmats.to(f32), Ks.to(f32))
    tri = _setup_triangles(u, v, z, faces, torch.tensor(near, dtype=f32, device=u.device), cull_backfaces)
    B, F = u.shape[0], faces.shape[0]
    best_depth = torch.full((B, height, width), torch.inf, dtype=f32, device=u.device)
    best_id = torch.full((B, height, width), -1, dtype=torch.int64, device=u.device)
    chunk = max(1, chunk_elements // (B * height * width))
    for start in range(0, F, chunk):
        depth, index = _chunk_depth({k: t[:, start:start + chunk] for k, t in tri.items()}, width, height).min(-1)
        closer = depth < best_depth  # strict: at equal depth the earlier (lower) id stays
        best_depth = torch.where(closer, depth, best_depth)
        best_id = torch.where(closer, index + start, best_id)
    return best_id, torch.where(best_id >= 0, best_depth, 0.0)
