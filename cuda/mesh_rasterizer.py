"""Differentiable triangle-mesh rasterizer (nvdiffrast is not on PyPI).

Two stages:
1. Visibility (no gradients): per pixel the id of the nearest triangle. On CPU tensors a native C++
   kernel (`csrc/mesh_raster.cpp`, OpenMP over cameras x 8x8 tiles); otherwise, and whenever the
   kernel cannot be built, the dense PyTorch reference `_torch_mesh.visibility`. There is no CUDA
   kernel: on CUDA tensors the reference runs on the GPU, fine for small meshes.
2. Barycentrics, depth, attribute interpolation and shading are PyTorch ops on the vertex positions,
   so gradients w.r.t. vertices and attributes come from autograd, on any device.

Conventions: `Cameras` (OpenCV, x right / y down / z forward), pixel (x, y) has its centre at
(x + 0.5, y + 0.5). Triangles with any vertex closer than `near` (camera-space z, default 0.01) are
skipped, not clipped. Triangles are double-sided unless `cull_backfaces=True`, which drops the
ones whose vertices run clockwise around their outward normal as seen from the camera
(front faces are counter-clockwise, as in trimesh). Edge functions with the top-left rule decide
coverage, so triangles sharing an edge cover each pixel on it exactly once. At equal depth the
lower triangle id wins; both visibility backends return identical ids.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from sds3d.cameras import Cameras
from sds3d.types import RenderOutput

from . import _torch_mesh
from ._native_mesh import MeshKernels
from .build import load_extension

DEFAULT_COLOR = (0.8, 0.8, 0.8)  # surface colour when neither vertex nor face colours are given


@functools.lru_cache(maxsize=None)
def _native() -> MeshKernels | None:
    library = load_extension("mesh_raster")
    return None if library is None else MeshKernels(library)


@dataclass
class Fragments:
    """What each pixel sees. Background pixels: face id -1, zero barycentrics and depth."""

    face_ids: torch.Tensor  # [B, H, W] int64, -1 on background
    bary: torch.Tensor  # [B, H, W, 3] perspective-correct barycentrics, differentiable w.r.t. vertices
    depth: torch.Tensor  # [B, H, W] camera-space z, differentiable, 0 on background
    mask: torch.Tensor  # [B, H, W] bool, face_ids >= 0


def _batched(values: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """[N, C] shared by all cameras or [B, N, C] per camera -> [1 or B, N, C]."""
    if values.ndim == 2:
        return values[None]
    if values.ndim != 3 or values.shape[0] != batch:
        raise ValueError(f"{name} must be [N, C] or [{batch}, N, C], got {tuple(values.shape)}")
    return values


def visibility(vertices: torch.Tensor, faces: torch.Tensor, cameras: Cameras, near: float = 0.01,
               cull_backfaces: bool = False, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest triangle per pixel, without gradients.

    vertices [V, 3] or [B, V, 3] world (rasterized in float32), faces [F, 3] int ->
    (face_ids [B, H, W] int64 with -1 on background, depth [B, H, W] float32 with 0 there).
    backend: "native" (C++, CPU tensors only), "reference" (PyTorch, any device), or "auto": native
    on CPU when it builds, else the reference. There is no CUDA kernel."""
    B = len(cameras)
    vertices = _batched(vertices.detach(), B, "vertices").to(torch.float32).contiguous()
    faces = faces.to(device=vertices.device, dtype=torch.int64).contiguous()
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got {tuple(faces.shape)}")
    if faces.numel() and (faces.min() < 0 or faces.max() >= vertices.shape[1]):
        raise ValueError("faces index vertices out of range")
    viewmats, Ks = cameras.viewmats.to(vertices.device), cameras.Ks.to(vertices.device)
    if backend not in ("auto", "native", "reference"):
        raise ValueError(f"backend must be 'auto', 'native' or 'reference', got {backend!r}")
    on_cpu = vertices.device.type == "cpu"
    if backend == "native" and not on_cpu:
        raise ValueError("the native mesh rasterizer runs on CPU tensors only; use backend='reference'")
    native = _native() if on_cpu and backend != "reference" else None
    if backend == "native" and native is None:
        raise RuntimeError("the native mesh rasterizer is unavailable (build failed or SDS3D_DISABLE_NATIVE=1)")
    if native is not None:
        return tuple(native.visibility(vertices, faces, viewmats, Ks, cameras.width, cameras.height, float(near),
                                       bool(cull_backfaces)))
    return _torch_mesh.visibility(vertices, faces, viewmats, Ks, cameras.width, cameras.height, near,
                                  cull_backfaces)


def fragments_from_face_ids(vertices: torch.Tensor, faces: torch.Tensor, cameras: Cameras,
                            face_ids: torch.Tensor) -> Fragments:
    """Differentiable part of rasterization for a fixed visibility.

    vertices [V, 3] or [B, V, 3] (any float dtype, gradients flow), faces [F, 3], face_ids
    [B, H, W] -> Fragments in the dtype of `vertices`. Barycentric weights come from the edge
    functions of the projected triangle at the pixel centre, then are made perspective-correct:
    b_k = (w_k / z_k) / sum_j (w_j / z_j) and depth = 1 / sum_j (w_j / z_j)."""
    B, H, W = face_ids.shape
    vertices = _batched(vertices, B, "vertices")
    dtype, device = vertices.dtype, vertices.device
    faces = faces.to(device=device, dtype=torch.int64)
    u, v, z = _torch_mesh.project_points(vertices, cameras.viewmats.to(device, dtype), cameras.Ks.to(device, dtype))
    mask = face_ids >= 0
    b, y, x = mask.nonzero(as_tuple=True)  # covered pixels, [N] each
    corners = faces[face_ids[b, y, x]]  # [N, 3]
    cu, cv, cz = (t[b[:, None], corners] for t in (u, v, z))  # [N, 3]
    px, py = (x.to(dtype) + 0.5)[:, None], (y.to(dtype) + 0.5)[:, None]
    # Edge function of the edge opposite each vertex k (from vertex k+1 to vertex k+2).
    u1, v1, u2, v2 = cu.roll(-1, -1), cv.roll(-1, -1), cu.roll(-2, -1), cv.roll(-2, -1)
    edge = (u2 - u1) * (py - v1) - (v2 - v1) * (px - u1)
    weights = edge / edge.sum(-1, keepdim=True)  # screen-space barycentrics
    persp = weights / cz
    inv_depth = persp.sum(-1, keepdim=True)  # [N, 1]
    bary = torch.zeros(B, H, W, 3, dtype=dtype, device=device).index_put((b, y, x), persp / inv_depth)
    depth = torch.zeros(B, H, W, dtype=dtype, device=device).index_put((b, y, x), 1.0 / inv_depth[:, 0])
    return Fragments(face_ids=face_ids, bary=bary, depth=depth, mask=mask)


def rasterize_mesh(vertices: torch.Tensor, faces: torch.Tensor, cameras: Cameras, backend: str = "auto",
                   cull_backfaces: bool = False, near: float = 0.01) -> Fragments:
    """vertices [V, 3] or [B, V, 3] world, faces [F, 3] int, B cameras -> Fragments [B, H, W, ...].

    Visibility by `visibility(backend=...)`, then `fragments_from_face_ids`, so barycentrics and
    depth are differentiable w.r.t. the vertex positions (not w.r.t. which triangle is visible)."""
    face_ids, _ = visibility(vertices, faces, cameras, near, cull_backfaces, backend)
    return fragments_from_face_ids(vertices, faces, cameras, face_ids)


def interpolate(attributes: torch.Tensor, fragments: Fragments, faces: torch.Tensor) -> torch.Tensor:
    """Per-vertex attributes [V, C] or [B, V, C] -> [B, H, W, C] at each pixel, 0 on background."""
    B = fragments.face_ids.shape[0]
    attributes = _batched(attributes, B, "attributes")
    corners = faces.to(device=attributes.device, dtype=torch.int64)[fragments.face_ids.clamp(min=0)]  # [B, H, W, 3]
    batch = torch.arange(B, device=corners.device)[:, None, None, None] if attributes.shape[0] > 1 else 0
    values = attributes[batch, corners]  # [B, H, W, 3, C]
    return (fragments.bary[..., None] * values).sum(-2)


def _per_face(values: torch.Tensor, face_ids: torch.Tensor) -> torch.Tensor:
    """Per-face values [1 or B, F, C] -> [B, H, W, C] at each pixel, 0 on background."""
    batch = torch.arange(face_ids.shape[0], device=face_ids.device)[:, None, None] if values.shape[0] > 1 else 0
    return values[batch, face_ids.clamp(min=0)] * (face_ids >= 0)[..., None]


def _supersampled(cameras: Cameras, factor: int) -> Cameras:
    """The same views at `factor` times the resolution (pixel centres stay consistent)."""
    Ks = cameras.Ks.clone()
    Ks[:, :2] *= factor
    return replace(cameras, Ks=Ks, width=cameras.width * factor, height=cameras.height * factor)


def _downsampled(image: RenderOutput, factor: int) -> RenderOutput:
    """Box-filter a supersampled render: colour and alpha averaged over each factor x factor block,
    depth and normal averaged over the block's covered samples."""
    def blocks(t):  # [B, H*f, W*f, C] -> [B, H, W, f*f, C]
        B, Hf, Wf, C = t.shape
        return t.reshape(B, Hf // factor, factor, Wf // factor, factor, C).transpose(2, 3).reshape(
            B, Hf // factor, Wf // factor, factor * factor, C)

    covered = blocks(image.alpha).sum(-2)

    def per_surface(t):
        return blocks(t).sum(-2) / covered.clamp(min=1)

    return RenderOutput(rgb=blocks(image.rgb).mean(-2), alpha=blocks(image.alpha).mean(-2),
                        depth=per_surface(image.depth), normal=per_surface(image.normal), meta=image.meta)


def render_mesh(vertices: torch.Tensor, faces: torch.Tensor, cameras: Cameras,
                vertex_colors: torch.Tensor | None = None, face_colors: torch.Tensor | None = None,
                light_dirs: torch.Tensor | None = None, ambient: float = 0.35, diffuse: float = 0.65,
                background=(1.0, 1.0, 1.0), antialias: bool = False, backend: str = "auto",
                cull_backfaces: bool = False) -> RenderOutput:
    """Flat-shaded Lambertian render composited over a plain background.

    vertices [V, 3] or [B, V, 3] world; faces [F, 3]; colours in [0, 1]: vertex_colors [V, 3] or
    [B, V, 3] (interpolated) or face_colors [F, 3] or [B, F, 3], default DEFAULT_COLOR;
    light_dirs [3] or [B, 3] world unit vectors from the surface towards the light, default a
    headlight (towards each camera); background (r, g, b), [3] or [B, 3].
    Per pixel: shade = ambient + diffuse * max(0, n . l) with n the face normal turned towards the
    camera (double-sided). Returns rgb [B, H, W, 3], alpha [B, H, W, 1] (coverage), depth
    [B, H, W, 1], normal [B, H, W, 3] (world, towards the camera, 0 on background) and
    meta["fragments"]. antialias=True renders at 2x resolution and box-filters 2x2 blocks (meta then
    holds the 2x fragments)."""
    if vertex_colors is not None and face_colors is not None:
        raise ValueError("give vertex_colors or face_colors, not both")
    if antialias:
        image = render_mesh(vertices, faces, _supersampled(cameras, 2), vertex_colors, face_colors, light_dirs,
                            ambient, diffuse, background, False, backend, cull_backfaces)
        return _downsampled(image, 2)

    B, dtype, device = len(cameras), vertices.dtype, vertices.device
    faces = faces.to(device=device, dtype=torch.int64)
    fragments = rasterize_mesh(vertices, faces, cameras, backend, cull_backfaces)
    corners = _batched(vertices, B, "vertices")[:, faces]  # [1 or B, F, 3, 3]
    normals = F.normalize(torch.linalg.cross(corners[:, :, 1] - corners[:, :, 0],
                                             corners[:, :, 2] - corners[:, :, 0]), dim=-1)
    to_camera = cameras.centers.to(device, dtype)[:, None] - corners[:, :, 0]  # [B, F, 3]
    normals = torch.where((normals * to_camera).sum(-1, keepdim=True) < 0, -normals, normals)
    normal = _per_face(normals, fragments.face_ids)  # [B, H, W, 3]

    if light_dirs is None:
        light_dirs = -cameras.viewmats[:, 2, :3]  # camera backward axis: a headlight
    light = torch.as_tensor(light_dirs, dtype=dtype, device=device).reshape(-1, 1, 1, 3)
    shade = ambient + diffuse * (normal * light).sum(-1, keepdim=True).clamp(min=0)  # [B, H, W, 1]

    if vertex_colors is not None:
        color = interpolate(torch.as_tensor(vertex_colors, dtype=dtype, device=device), fragments, faces)
    elif face_colors is not None:
        colors = torch.as_tensor(face_colors, dtype=dtype, device=device)
        color = _per_face(_batched(colors, B, "face_colors"), fragments.face_ids)
    else:
        color = torch.tensor(DEFAULT_COLOR, dtype=dtype, device=device).expand(*fragments.face_ids.shape, 3)

    alpha = fragments.mask[..., None].to(dtype)
    background = torch.as_tensor(background, dtype=dtype, device=device).reshape(-1, 1, 1, 3)
    rgb = color * shade * alpha + background * (1 - alpha)
    return RenderOutput(rgb=rgb, alpha=alpha, depth=fragments.depth[..., None], normal=normal,
                        meta={"fragments": fragments})


def render_trimesh(mesh, cameras: Cameras, **kwargs) -> RenderOutput:
    """`render_mesh` of a trimesh.Trimesh, using its face or vertex colours (RGBA bytes) unless
    colours are passed in `kwargs`; float32 on the CPU."""
    vertices = torch.as_tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.as_tensor(mesh.faces, dtype=torch.int64)
    if "vertex_colors" not in kwargs and "face_colors" not in kwargs:
        kind = mesh.visual.kind
        if kind == "vertex":
            kwargs["vertex_colors"] = torch.as_tensor(mesh.visual.vertex_colors[:, :3] / 255.0, dtype=torch.float32)
        elif kind == "face":
            kwargs["face_colors"] = torch.as_tensor(mesh.visual.face_colors[:, :3] / 255.0, dtype=torch.float32)
    return render_mesh(vertices, faces, cameras, **kwargs)
