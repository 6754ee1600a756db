"""Differentiable shading of triangle meshes on top of `sds3d.cuda.mesh_rasterizer`.

The rasterizer gives, per pixel, the visible triangle and differentiable barycentrics. This module
adds what a mesh representation needs on top:

- colour from per-vertex colours, per-face colours, a UV texture (bilinear `grid_sample`) or a
  colour field evaluated at the visible surface points (DMTet's texture field);
- Lambertian shading `ambient + diffuse * max(0, n . l)` (flat face normals turned towards the
  camera); `ambient=1, diffuse=0` renders plain albedo;
- silhouette antialiasing, analytic in the manner of nvdiffrast (Laine et al. 2020): wherever two
  horizontally or vertically adjacent pixels see different triangles, the nearer of the two is
  tested for a *silhouette* edge crossing the segment between the pixel centres. If the edge
  crosses at distance d (in pixels, from the nearer pixel's centre) the nearer colour spills into
  the far pixel with weight max(0, d - 1/2), or the far colour into the nearer pixel with weight
  max(0, 1/2 - d). For an axis-aligned edge this is exactly the pixel's coverage; in general it is
  a continuous function of the projected edge, so alpha and colours get gradients w.r.t. the vertex
  positions through d. Mostly vertical edges (|dx| <= |dy| on screen) are handled by horizontal
  pixel pairs, the others by vertical pairs, so no edge is counted twice.

An edge is a silhouette when only one face uses it, when more than two do, or when the opposite
corners of its two faces project to the same side of it (the surface folds back there). The test
does not depend on the winding order. UV coordinates follow trimesh/OpenGL: u to the right, v up
(v = 0 is the bottom row of the texture image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from sds3d.cameras import Cameras
from sds3d.cuda._torch_mesh import project_points
from sds3d.cuda.mesh_rasterizer import Fragments, _batched, _per_face, interpolate, rasterize_mesh
from sds3d.types import RenderOutput


@dataclass
class EdgeTopology:
    """Neighbours across the edges of each face. Edge k of face f is opposite corner k (it runs
    from corner k+1 to corner k+2). neighbor_face [F, 3]: the other face on that edge, -1 when the
    edge is a boundary or non-manifold; neighbor_corner [F, 3]: that face's corner opposite the
    shared edge (-1 where there is no neighbour)."""

    neighbor_face: torch.Tensor
    neighbor_corner: torch.Tensor

    @classmethod
    def from_faces(cls, faces: torch.Tensor) -> "EdgeTopology":
        """faces [F, 3] int, indices into positions (vertices that are the same point must share
        an index, or their edges count as boundaries)."""
        faces = faces.to(torch.int64)
        n_faces, device = faces.shape[0], faces.device
        start, end = faces[:, [1, 2, 0]], faces[:, [2, 0, 1]]
        n_vertices = int(faces.max()) + 1 if n_faces else 1
        keys = (torch.minimum(start, end) * n_vertices + torch.maximum(start, end)).reshape(-1)  # [3F]
        _, edge, counts = torch.unique(keys, return_inverse=True, return_counts=True)
        order = torch.argsort(edge, stable=True)  # half-edges (3 f + k) grouped by edge
        first = torch.cumsum(counts, 0) - counts
        shared = (counts == 2).nonzero()[:, 0]
        h1, h2 = order[first[shared]], order[first[shared] + 1]
        neighbor_face = torch.full((3 * n_faces,), -1, dtype=torch.int64, device=device)
        neighbor_corner = torch.full((3 * n_faces,), -1, dtype=torch.int64, device=device)
        neighbor_face[h1], neighbor_corner[h1] = h2 // 3, h2 % 3
        neighbor_face[h2], neighbor_corner[h2] = h1 // 3, h1 % 3
        return cls(neighbor_face.reshape(n_faces, 3), neighbor_corner.reshape(n_faces, 3))


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup. texture [Ht, Wt, C] or [B, Ht, Wt, C]; uv [B, ..., 2] in [0, 1] (v up)
    -> [B, ..., C]. Texel centres sit at ((i + 0.5) / Wt, 1 - (j + 0.5) / Ht); clamped at the
    border."""
    B = uv.shape[0]
    texture = texture[None] if texture.ndim == 3 else texture
    image = texture.permute(0, 3, 1, 2).expand(B, -1, -1, -1)  # [B, C, Ht, Wt]
    grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], -1).reshape(B, 1, -1, 2).to(image.dtype)
    values = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return values[:, :, 0].transpose(1, 2).reshape(*uv.shape[:-1], texture.shape[-1])


def _silhouette_crossing(u, v, faces, topology, batch, face, pixel, other, axis):
    """Where the silhouette edge of `face` crosses the segment from pixel centre `pixel` to the
    adjacent centre `other` ([N, 2] (x, y) ints, differing along `axis`: 0 = x, 1 = y), counting
    only edges steeper than 45 degrees across the segment (exactly 45: horizontal pairs only).
    -> (distance from `pixel` in pixels [N], found [N] bool)."""
    corners = faces[face]  # [N, 3]
    cu, cv = u[batch[:, None], corners], v[batch[:, None], corners]  # [N, 3]
    start_u, start_v, end_u, end_v = cu.roll(-1, -1), cv.roll(-1, -1), cu.roll(-2, -1), cv.roll(-2, -1)
    du, dv = end_u - start_u, end_v - start_v

    def side(pu, pv):  # which side of each edge a point lies on
        return du * (pv - start_v) - dv * (pu - start_u)

    neighbor, corner = topology.neighbor_face[face], topology.neighbor_corner[face]  # [N, 3]
    far = faces[neighbor.clamp(min=0), corner.clamp(min=0)]
    far_u, far_v = u[batch[:, None], far], v[batch[:, None], far]
    silhouette = (neighbor < 0) | (side(cu, cv) * side(far_u, far_v) >= 0)

    if axis == 0:
        along0, along1, across0, across1 = start_u, end_u, start_v, end_v
    else:
        along0, along1, across0, across1 = start_v, end_v, start_u, end_u
    d_along, d_across = along1 - along0, across1 - across0
    steep = d_along.abs() <= d_across.abs() if axis == 0 else d_along.abs() < d_across.abs()
    line = (pixel[:, 1 - axis].to(u.dtype) + 0.5)[:, None]
    centre = (pixel[:, axis].to(u.dtype) + 0.5)[:, None]
    direction = (other[:, axis] - pixel[:, axis]).to(u.dtype)[:, None]
    crosses = ((across0 - line) * (across1 - line) <= 0) & (d_across != 0)
    t = (line - across0) / torch.where(d_across != 0, d_across, torch.ones_like(d_across))
    distance = (along0 + t * d_along - centre) * direction
    valid = silhouette & steep & crosses & (distance >= 0) & (distance <= 1)
    k = valid.to(torch.int8).argmax(-1, keepdim=True)
    return distance.gather(-1, k)[:, 0], valid.any(-1)


def antialias(image: torch.Tensor, fragments: Fragments, vertices: torch.Tensor, faces: torch.Tensor,
              cameras: Cameras, topology: EdgeTopology | None = None) -> torch.Tensor:
    """Analytic silhouette antialiasing (see the module docstring).

    image [B, H, W, C] (shaded and composited, alpha may be one of the channels); fragments of
    `vertices` [V, 3] or [B, V, 3] and `faces` [F, 3]; topology of `faces` (built when None)
    -> [B, H, W, C], differentiable w.r.t. `image` and `vertices`."""
    B, H, W, _ = image.shape
    faces = faces.to(device=image.device, dtype=torch.int64)
    if topology is None:
        topology = EdgeTopology.from_faces(faces)
    vertices = _batched(vertices, B, "vertices")
    u, v, _ = project_points(vertices, cameras.viewmats.to(vertices), cameras.Ks.to(vertices))
    ids = fragments.face_ids
    depth = torch.where(fragments.mask, fragments.depth.detach(), torch.inf)
    delta = torch.zeros_like(image)
    for axis in (0, 1):  # 0: horizontal pixel pairs (x, x + 1); 1: vertical pairs (y, y + 1)
        ids_a, ids_b = (ids[:, :, :-1], ids[:, :, 1:]) if axis == 0 else (ids[:, :-1], ids[:, 1:])
        b, y, x = (ids_a != ids_b).nonzero(as_tuple=True)
        p = torch.stack([x, y], -1)
        q = p + torch.tensor([1, 0] if axis == 0 else [0, 1], device=p.device)
        p_front = depth[b, p[:, 1], p[:, 0]] <= depth[b, q[:, 1], q[:, 0]]
        front = torch.where(p_front[:, None], p, q)
        back = torch.where(p_front[:, None], q, p)
        face = ids[b, front[:, 1], front[:, 0]]
        distance, found = _silhouette_crossing(u, v, faces, topology, b, face, front, back, axis)
        b, front, back, distance = b[found], front[found], back[found], distance[found, None]
        front_color, back_color = image[b, front[:, 1], front[:, 0]], image[b, back[:, 1], back[:, 0]]
        spill = (distance - 0.5).clamp(min=0) * (front_color - back_color)  # into the far pixel
        retreat = (0.5 - distance).clamp(min=0) * (back_color - front_color)  # into the near pixel
        delta = delta.index_put((b, back[:, 1], back[:, 0]), spill, accumulate=True)
        delta = delta.index_put((b, front[:, 1], front[:, 0]), retreat, accumulate=True)
    return image + delta


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[1 or B, V, 3] vertices, [F, 3] faces -> unit normals [1 or B, F, 3] (right-hand rule)."""
    corners = vertices[:, faces]
    return F.normalize(torch.linalg.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0]),
                       dim=-1)


def render(vertices: torch.Tensor, faces: torch.Tensor, cameras: Cameras, *,
           vertex_colors: torch.Tensor | None = None, face_colors: torch.Tensor | None = None,
           uvs: torch.Tensor | None = None, texture: torch.Tensor | None = None,
           color_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
           background: torch.Tensor | None = None, light_dirs: torch.Tensor | None = None,
           ambient: float = 0.35, diffuse: float = 0.65, antialias_silhouettes: bool = True,
           topology: EdgeTopology | None = None, backend: str = "auto") -> RenderOutput:
    """Shaded, antialiased render of a triangle mesh; gradients reach vertices and colours.

    vertices [V, 3] or [B, V, 3] world; faces [F, 3]. Exactly one colour source, values in [0, 1]:
    vertex_colors [V, 3] (interpolated), face_colors [F, 3], uvs [V, 2] with texture [Ht, Wt, 3],
    or color_fn(points [N, 3]) -> [N, 3] evaluated at the visible surface points. background [3]
    or [B, 3] (default white); light_dirs [3] or [B, 3] world unit vectors towards the light
    (default a headlight). topology: of `faces` for the silhouette test (built when None; pass one
    when vertices that are the same point carry different indices, e.g. at UV seams).
    -> rgb [B, H, W, 3], alpha [B, H, W, 1] (fractional along silhouettes), depth [B, H, W, 1],
    normal [B, H, W, 3] (world, towards the camera), meta {"fragments"}."""
    given = [vertex_colors is not None, face_colors is not None, texture is not None, color_fn is not None]
    if sum(given) != 1:
        raise ValueError("give exactly one of vertex_colors, face_colors, uvs + texture, color_fn")
    if (texture is None) != (uvs is None):
        raise ValueError("a texture needs uvs and uvs need a texture")
    B, dtype, device = len(cameras), vertices.dtype, vertices.device
    cameras = cameras.to(device)
    faces = faces.to(device=device, dtype=torch.int64)
    fragments = rasterize_mesh(vertices, faces, cameras, backend)
    mask = fragments.mask

    normals = face_normals(_batched(vertices, B, "vertices"), faces)  # [1 or B, F, 3]
    to_camera = cameras.centers.to(dtype)[:, None] - _batched(vertices, B, "vertices")[:, faces[:, 0]]
    normals = torch.where((normals * to_camera).sum(-1, keepdim=True) < 0, -normals, normals)
    normal = _per_face(normals, fragments.face_ids)  # [B, H, W, 3]
    if light_dirs is None:
        light_dirs = -cameras.viewmats[:, 2, :3]
    light = torch.as_tensor(light_dirs, dtype=dtype, device=device).reshape(-1, 1, 1, 3)
    shade = ambient + diffuse * (normal * light).sum(-1, keepdim=True).clamp(min=0)

    if vertex_colors is not None:
        color = interpolate(vertex_colors, fragments, faces)
    elif face_colors is not None:
        color = _per_face(_batched(face_colors, B, "face_colors"), fragments.face_ids)
    elif texture is not None:
        color = sample_texture(texture, interpolate(uvs, fragments, faces)) * mask[..., None]
    else:
        points = interpolate(vertices, fragments, faces)[mask]  # [N, 3]
        values = color_fn(points)
        color = torch.zeros(*mask.shape, values.shape[-1], dtype=values.dtype, device=device).index_put(
            mask.nonzero(as_tuple=True), values)

    alpha = mask[..., None].to(dtype)
    if background is None:
        background = torch.ones(3, dtype=dtype, device=device)
    background = torch.as_tensor(background, dtype=dtype, device=device).reshape(-1, 1, 1, 3)
    rgb = color * shade * alpha + background * (1 - alpha)
    if antialias_silhouettes:
        rgba = antialias(torch.cat([rgb, alpha], -1), fragments, vertices, faces, cameras, topology)
        rgb, alpha = rgba[..., :3], rgba[..., 3:]
    return RenderOutput(rgb=rgb, alpha=alpha, depth=fragments.depth[..., None], normal=normal,
                        meta={"fragments": fragments})
