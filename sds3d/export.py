"""Textured mesh export of any representation: GLB (binary glTF with a base-colour texture) and
OBJ + MTL + PNG.

1. Surface and colour: a `Mesh` as it is (colour = its vertex colours or texture at each face's
   barycentrics); a `DMTet`'s extracted mesh with its colour field; `Gaussians` through
   `gaussians_surface` (marching cubes of their density), `poisson_surface` or `tsdf_surface`
   (open3d, from rendered depth) with the colour of the nearest Gaussians; or any (vertices, faces,
   colour function) given to `bake_textured_mesh`. A surface whose colour comes from 3D points is
   first decimated to `max_faces` (fast-simplification) so that the unwrap stays fast.
2. UV unwrap with xatlas (charts packed `padding // 2` texels apart).
3. Baking: the mesh is rasterised in UV space by the mesh rasterizer — vertex (u, 1 - v, 1) seen by
   an identity camera with focal length = texture size, so pixels are texels and barycentrics are
   affine — and every texel whose centre is covered takes the colour at its surface point.
4. Dilation: empty texels take the mean of their filled 3x3 neighbours, ring by ring, so bilinear
   lookups at chart borders never mix in the empty background; what is left gets the mean colour.

Files are written +Y up with the front towards +Z, as glTF says (`sds3d.axes`), and read back into
the world frame by `load_trimesh`. Requires xatlas (and fast-simplification, pymcubes or open3d
for Gaussians), all in the `mesh` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .cameras import Cameras
from sds3d.representations.mesh_files import Y_UP_SUFFIXES, load_trimesh, save_trimesh
from sds3d.cuda.mesh_rasterizer import fragments_from_face_ids, visibility

# the `mesh` extra's modules a run needs -> their pip names (open3d only for `--method poisson|tsdf`)
MESH_TOOLS = {"xatlas": "xatlas", "fast_simplification": "fast-simplification", "mcubes": "pymcubes"}


def require_mesh_tools(representation: str, init_from: bool = False) -> None:
    """InputError (one line) naming the `mesh` extra when a run of `representation` ("nerf" | "dmtet"
    write a textured asset.glb; NeRF is meshed by marching cubes, and so is any run's source when
    `init_from`) would need a package of it that is not installed; checked before training."""
    import importlib.util

    from .errors import InputError

    needed = {"nerf": ["xatlas", "fast_simplification", "mcubes"], "dmtet": ["xatlas", "fast_simplification"]}
    modules = needed.get(representation, []) + (["mcubes"] if init_from else [])
    missing = sorted({MESH_TOOLS[m] for m in modules if importlib.util.find_spec(m) is None})
    if missing:
        raise InputError(f"a {representation} run{' started --init-from a run' if init_from else ''} needs the mesh "
                         f"extra: pip install 'sds3d[mesh]' (missing: {', '.join(missing)})")


def save_asset(representation, directory, progress: bool = False) -> Path:
    """Writes the asset a run delivers into `directory` and returns its path: 3D Gaussians as the
    3DGS `asset.ply`, any other representation as a mesh with a baked UV texture, `asset.glb`, with a
    progress bar if `progress`."""
    from sds3d.representations.gaussians import Gaussians

    if isinstance(representation, Gaussians):
        return representation.save_ply(Path(directory) / "asset.ply")
    return export_textured(representation, Path(directory) / "asset.glb", progress=progress)


# colour_fn(points [N, 3], face_ids [N], bary [N, 3]) -> rgb [N, 3] in [0, 1]
ColorFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def unwrap(vertices: torch.Tensor, faces: torch.Tensor, texture_size: int = 1024, padding: int = 4):
    """xatlas parametrisation. vertices [V, 3], faces [F, 3] -> (vertex_map [V'] (index of the input
    vertex each output vertex copies), faces [F, 3] over the output vertices (same order as the
    input faces), uvs [V', 2] in [0, 1], (width, height) of the atlas in texels)."""
    from sds3d.representations.convert import optional_import

    xatlas = optional_import("xatlas", "xatlas")
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices.detach().cpu().numpy(), dtype=np.float32),
                   np.ascontiguousarray(faces.cpu().numpy(), dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding, pack.bilinear = texture_size, padding, True
    atlas.generate(pack_options=pack)
    vertex_map, new_faces, uvs = atlas[0]
    return (torch.as_tensor(vertex_map.astype(np.int64)), torch.as_tensor(new_faces.astype(np.int64)),
            torch.as_tensor(uvs, dtype=torch.float32), (atlas.width, atlas.height))


def dilate(texture: torch.Tensor, filled: torch.Tensor, rings: int) -> torch.Tensor:
    """texture [H, W, C], filled [H, W] bool -> texture with empty texels set, `rings` times, to the
    mean of their filled 3x3 neighbours; texels still empty then take the mean filled colour."""
    image = (texture * filled[..., None]).permute(2, 0, 1)[None]  # [1, C, H, W]
    weight = filled[None, None].to(texture.dtype)
    kernel = torch.ones(1, 1, 3, 3, dtype=texture.dtype)
    for _ in range(rings):
        sums = F.conv2d(image, kernel.expand(image.shape[1], 1, 3, 3), padding=1, groups=image.shape[1])
        counts = F.conv2d(weight, kernel, padding=1)
        grow = (weight == 0) & (counts > 0)
        image = torch.where(grow, sums / counts.clamp(min=1), image)
        weight = torch.where(grow, torch.ones_like(weight), weight)
    mean = texture[filled].mean(0) if filled.any() else torch.full((texture.shape[-1],), 0.5)
    image = torch.where(weight > 0, image, mean[None, :, None, None])
    return image[0].permute(1, 2, 0)


def bake_texture(vertices: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor, uv_faces: torch.Tensor,
                 color_fn: ColorFn, width: int, height: int, padding: int = 8) -> torch.Tensor:
    """Texture [height, width, 3] in [0, 1]. Surface: vertices [V, 3] and faces [F, 3]; layout:
    uvs [U, 2] (v up) and uv_faces [F, 3] (face i of both is the same triangle). Covered texels
    take color_fn at their surface point, then `dilate` by `padding` rings."""
    uv_points = torch.cat([uvs[:, :1], 1 - uvs[:, 1:], torch.ones(len(uvs), 1)], -1)
    K = torch.tensor([[float(width), 0.0, 0.0], [0.0, float(height), 0.0], [0.0, 0.0, 1.0]])
    camera = Cameras(viewmats=torch.eye(4)[None], Ks=K[None], width=width, height=height)
    with torch.no_grad():
        face_ids, _ = visibility(uv_points, uv_faces, camera)
        fragments = fragments_from_face_ids(uv_points, uv_faces, camera, face_ids)
        mask = fragments.mask[0]
        face = face_ids[0][mask]
        bary = fragments.bary[0][mask]
        points = (bary[..., None] * vertices.detach().float()[faces[face]]).sum(-2)
        texture = torch.zeros(height, width, 3)
        texture[mask] = color_fn(points, face, bary).float().clamp(0, 1).cpu()
        return dilate(texture, mask, padding)


def decimate(vertices: torch.Tensor, faces: torch.Tensor, max_faces: int):
    """Quadric decimation (fast-simplification) to at most `max_faces` faces; unchanged if smaller."""
    if len(faces) <= max_faces:
        return vertices, faces
    from sds3d.representations.convert import optional_import

    fast_simplification = optional_import("fast_simplification", "fast-simplification")
    v, f = fast_simplification.simplify(vertices.detach().cpu().numpy().astype(np.float32),
                                        faces.cpu().numpy().astype(np.int64), 1 - max_faces / len(faces))
    return torch.as_tensor(v, dtype=torch.float32), torch.as_tensor(f.astype(np.int64))


def bake_textured_mesh(vertices: torch.Tensor, faces: torch.Tensor, color_fn: ColorFn, texture_size: int = 1024,
                       padding: int = 8, config=None):
    """Unwrap (charts `padding // 2` texels apart) and bake (dilated by `padding` rings) -> a textured
    `Mesh` with `config` (same faces in the same order, vertices split at UV seams)."""
    from sds3d.representations.mesh import Mesh

    vertex_map, uv_faces, uvs, (width, height) = unwrap(vertices, faces, texture_size, padding // 2)
    texture = bake_texture(vertices, faces, uvs, uv_faces, color_fn, width, height, padding)
    return Mesh(vertices.detach().float()[vertex_map], uv_faces, uvs=uvs, texture=texture, config=config)


def surface_of(representation, resolution: int = 128, bound: float = 0.6, max_faces: int = 20000,
               method: str = "marching-cubes"):
    """-> (vertices [V, 3], faces [F, 3], colour_fn) of a DMTet, NeRF or Gaussians (see the module
    docstring), or of any other representation's `to_mesh` (a Mesh is its own); NeRF and Gaussians
    are meshed on a `resolution` grid over [-bound, bound]^3, Gaussians by `method` (`SURFACE_METHODS`):
    marching cubes of their density, or open3d's Poisson reconstruction or TSDF fusion of their rendered
    depth (`poisson_surface`, `tsdf_surface`)."""
    from sds3d.representations.convert import (DENSITY_SMOOTHING, SURFACE_METHODS, gaussian_colors_at,
                                               gaussians_surface, poisson_surface, tsdf_surface)
    from sds3d.representations.dmtet import DMTet
    from sds3d.representations.gaussians import Gaussians
    from sds3d.representations.nerf import NeRF

    if method not in SURFACE_METHODS:
        raise ValueError(f"unknown meshing method {method!r}; choose one of {', '.join(SURFACE_METHODS)}")
    if method != "marching-cubes" and not isinstance(representation, Gaussians):
        raise ValueError(f"--method {method} meshes 3D Gaussians; a {type(representation).__name__} uses marching-cubes")

    if isinstance(representation, DMTet):
        with torch.no_grad():
            vertices, faces = representation.extract_mesh()
        vertices, faces = decimate(vertices, faces, max_faces)
        return vertices, faces, lambda points, face, bary: representation.color_field(points)
    if isinstance(representation, NeRF):
        mesh = representation.to_mesh(resolution, bound)
        vertices, faces = decimate(mesh.vertices.detach(), mesh.faces, max_faces)
        return vertices, faces, lambda points, face, bary: representation.albedo(points)
    if isinstance(representation, Gaussians):
        surface = {"marching-cubes": gaussians_surface, "poisson": poisson_surface, "tsdf": tsdf_surface}[method]
        vertices, faces = decimate(*surface(representation, resolution, bound), max_faces)
        min_scale = DENSITY_SMOOTHING * 2 * bound / resolution

        def color_fn(points, face, bary):
            return gaussian_colors_at(representation, points, min_scale=min_scale)

        return vertices, faces, color_fn
    mesh = representation.to_mesh(resolution, bound)  # a Mesh is itself; any other representation its surface
    return mesh.vertices.detach(), mesh.faces, lambda points, face, bary: mesh.colors_at(face, bary)


def export_textured(representation, path, texture_size: int = 1024, padding: int = 8, resolution: int = 128,
                    bound: float = 0.6, max_faces: int = 20000, method: str = "marching-cubes",
                    progress: bool = False) -> Path:
    """Export a Mesh, DMTet, NeRF or Gaussians as a UV-textured mesh, +Y up: .glb, or .obj (+ .mtl +
    .png). Gaussians are meshed by `method` ("marching-cubes" | "poisson" | "tsdf", `surface_of`).
    `progress` shows a bar over the stages (surface, UV unwrap and texture bake, write)."""
    from tqdm.auto import tqdm

    if Path(path).suffix.lower() not in (".glb", ".obj"):
        raise ValueError(f"textured export writes .glb or .obj, got {Path(path).suffix or '(none)'!r}")
    with tqdm(total=3, desc=f"export {Path(path).name}", disable=not progress, leave=False) as bar:
        bar.set_postfix_str("surface")
        vertices, faces, color_fn = surface_of(representation, resolution, bound, max_faces, method)
        bar.update()
        bar.set_postfix_str(f"UV unwrap and {texture_size}px texture bake")
        mesh = bake_textured_mesh(vertices, faces, color_fn, texture_size, padding)
        bar.update()
        bar.set_postfix_str("write")
        out = mesh.save(path)
        bar.update()
    return out


__all__ = ["MESH_TOOLS", "require_mesh_tools", "unwrap", "dilate", "bake_texture", "decimate", "bake_textured_mesh", "surface_of", "Y_UP_SUFFIXES",
           "save_trimesh", "load_trimesh", "export_textured"]
