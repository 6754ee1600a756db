"""An explicit triangle mesh with per-vertex colours or a UV texture, as a Representation.

Vertices carry attributes (colour or UV), so a file may hold several vertices at one position
(colour or UV seams). Geometry lives on the welded points: `positions` [P, 3] is the parameter and
`vertex_to_position` [V] maps each attribute vertex to its point, so seams cannot open when the
geometry is optimised, and the silhouette test of the renderer sees the mesh as connected.
Faces are counter-clockwise seen from outside (trimesh's convention). Colours are display values
in [0, 1]; texture images are used as stored (no sRGB decoding), like vertex colours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sds3d.cameras import Cameras
from sds3d.cuda.mesh_rasterizer import DEFAULT_COLOR
from sds3d.types import RenderOutput
from .base import Representation
from .mesh_files import load_trimesh, save_trimesh
from .mesh_render import EdgeTopology, render, sample_texture


@dataclass
class MeshConfig:
    ambient: float = 0.35  # shade = ambient + diffuse * max(0, n . l); ambient=1, diffuse=0 is albedo
    diffuse: float = 0.65
    antialias: bool = True  # analytic silhouette antialiasing (gives vertices silhouette gradients)
    backend: str = "auto"  # visibility pass: auto | native | reference
    lr_positions: float = 1e-3  # 0 freezes the geometry
    lr_colors: float = 1e-2


def _weld(vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """vertices [V, 3] float32 -> (distinct positions [P, 3], index [V] into them); exact equality
    (-0.0 counts as 0.0)."""
    rows = np.ascontiguousarray(vertices.detach().cpu().numpy() + np.float32(0.0))
    _, first, inverse = np.unique(rows.view(np.dtype((np.void, 12))).reshape(-1), return_index=True,
                                  return_inverse=True)
    return vertices[torch.as_tensor(first)].clone(), torch.as_tensor(inverse.reshape(-1))


def _split_face_colors(vertices: np.ndarray, faces: np.ndarray, face_colors: np.ndarray):
    """Per-face colours -> per-vertex colours, duplicating a vertex once per distinct colour of
    its faces. -> (vertices [V', 3], faces [F, 3], vertex colours [V', C])."""
    corner_vertex = faces.reshape(-1)
    corner_color = np.repeat(face_colors, 3, axis=0)
    keys = np.concatenate([corner_vertex[:, None].astype(np.float64), corner_color.astype(np.float64)], 1)
    unique, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return vertices[corner_vertex[first]], inverse.reshape(-1, 3), corner_color[first]


class Mesh(Representation):
    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor, vertex_colors: torch.Tensor | None = None,
                 uvs: torch.Tensor | None = None, texture: torch.Tensor | None = None,
                 config: MeshConfig | None = None):
        """vertices [V, 3], faces [F, 3] int, and vertex_colors [V, 3] or uvs [V, 2] + texture
        [Ht, Wt, 3] (all in [0, 1]; default: DEFAULT_COLOR everywhere)."""
        super().__init__()
        if vertex_colors is not None and texture is not None:
            raise ValueError("give vertex_colors or uvs + texture, not both")
        if (uvs is None) != (texture is None):
            raise ValueError("a texture needs uvs and uvs need a texture")
        self.config = config or MeshConfig()
        vertices = torch.as_tensor(vertices, dtype=torch.float32)
        positions, vertex_to_position = _weld(vertices)
        self.positions = nn.Parameter(positions, requires_grad=self.config.lr_positions > 0)
        faces = torch.as_tensor(faces, dtype=torch.int64)
        self.register_buffer("faces", faces)
        self.register_buffer("vertex_to_position", vertex_to_position)
        topology = EdgeTopology.from_faces(vertex_to_position[faces])
        self.register_buffer("neighbor_face", topology.neighbor_face, persistent=False)
        self.register_buffer("neighbor_corner", topology.neighbor_corner, persistent=False)
        if texture is not None:
            self.register_buffer("uvs", torch.as_tensor(uvs, dtype=torch.float32))
            self.texture = nn.Parameter(torch.as_tensor(texture, dtype=torch.float32))
            self.vertex_colors = None
        else:
            if vertex_colors is None:
                vertex_colors = torch.tensor(DEFAULT_COLOR).expand(len(vertices), 3)
            self.vertex_colors = nn.Parameter(torch.as_tensor(vertex_colors, dtype=torch.float32).clone())
            self.uvs = self.texture = None

    # ----- construction --------------------------------------------------------------------------

    @classmethod
    def from_trimesh(cls, mesh, config: MeshConfig | None = None) -> "Mesh":
        """Colours from the mesh's texture (+ UVs; times a glTF baseColorFactor), vertex colours,
        face colours (vertices split where their faces differ) or material colour, in that order."""
        vertices, faces, visual = np.asarray(mesh.vertices), np.asarray(mesh.faces), mesh.visual
        if visual.kind == "texture":
            material = visual.material
            image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
            if image is not None and visual.uv is not None:
                texture = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
                factor = getattr(material, "baseColorFactor", None)
                if factor is not None:
                    texture = texture * np.asarray(factor[:3], dtype=np.float32) / 255.0
                return cls(torch.from_numpy(vertices), torch.from_numpy(faces),
                           uvs=torch.as_tensor(visual.uv, dtype=torch.float32),
                           texture=torch.from_numpy(texture.copy()), config=config)
            color = np.asarray(material.main_color[:3], dtype=np.float32) / 255.0
            return cls(torch.from_numpy(vertices), torch.from_numpy(faces),
                       torch.from_numpy(np.tile(color, (len(vertices), 1))), config=config)
        if visual.kind == "vertex":
            colors = np.asarray(visual.vertex_colors)[:, :3] / 255.0
        elif visual.kind == "face":
            vertices, faces, colors = _split_face_colors(vertices, faces, np.asarray(visual.face_colors)[:, :3])
            colors = colors / 255.0
        else:
            colors = None
        return cls(torch.from_numpy(vertices), torch.from_numpy(faces),
                   None if colors is None else torch.as_tensor(colors, dtype=torch.float32), config=config)

    @classmethod
    def load(cls, path, config: MeshConfig | None = None) -> "Mesh":
        """.obj (+ .mtl, texture), .glb/.gltf, .ply or anything else trimesh reads; a scene is
        flattened into one mesh; .glb/.gltf/.obj are +Y up (`mesh_files.load_trimesh`). InputError
        (one line) for a missing, unreadable or empty file, one with NaN / infinite positions or one
        whose triangles have no area."""
        from sds3d.errors import InputError, first_line

        if not Path(path).is_file():
            raise InputError(f"{path}: no such mesh file")
        try:
            mesh = load_trimesh(path)
        except Exception as error:  # trimesh raises many types (ValueError, JSONDecodeError, KeyError, ...)
            raise InputError(f"{path}: not a readable mesh file ({first_line(error)[:100]})") from None
        if len(mesh.faces) == 0:
            raise InputError(f"{path}: holds no triangles (empty, or not a mesh file)")
        if not np.isfinite(np.asarray(mesh.vertices)).all():
            raise InputError(f"{path}: vertex positions are NaN or infinite")
        if not mesh.area > 0:
            raise InputError(f"{path}: its triangles have no area (every one is degenerate)")
        return cls.from_trimesh(mesh, config)

    # ----- geometry and colour -------------------------------------------------------------------

    @property
    def vertices(self) -> torch.Tensor:  # [V, 3] positions of the attribute vertices
        return self.positions[self.vertex_to_position]

    @property
    def topology(self) -> EdgeTopology:
        return EdgeTopology(self.neighbor_face, self.neighbor_corner)

    def colors_at(self, face_ids: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
        """Surface colour [N, 3] in [0, 1] at barycentrics bary [N, 3] of faces face_ids [N]."""
        corners = self.faces[face_ids]  # [N, 3]
        if self.texture is None:
            return (bary[..., None] * self.vertex_colors[corners]).sum(-2).clamp(0, 1)
        uv = (bary[..., None] * self.uvs[corners]).sum(-2)
        return sample_texture(self.texture.clamp(0, 1), uv[None])[0]

    def sample_surface(self, n: int, generator: torch.Generator | None = None):
        """n points uniform by area -> (points [n, 3], unit normals [n, 3], colours [n, 3],
        face ids [n], barycentrics [n, 3]); no gradients."""
        with torch.no_grad():
            corners = self.vertices[self.faces]  # [F, 3, 3]
            cross = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
            area = cross.norm(dim=-1)
            face_ids = torch.multinomial(area, n, replacement=True, generator=generator)
            r1, r2 = torch.rand(2, n, generator=generator)
            s = r1.sqrt()
            bary = torch.stack([1 - s, s * (1 - r2), s * r2], -1)  # uniform on the triangle
            points = (bary[..., None] * corners[face_ids]).sum(-2)
            normals = cross[face_ids] / area[face_ids, None].clamp(min=1e-20)
            return points, normals, self.colors_at(face_ids, bary), face_ids, bary

    # ----- Representation ------------------------------------------------------------------------

    def param_groups(self) -> list[dict]:
        groups = []
        if self.config.lr_positions > 0:
            groups.append({"name": "positions", "params": [self.positions], "lr": self.config.lr_positions})
        colors = self.vertex_colors if self.texture is None else self.texture
        groups.append({"name": "colors", "params": [colors], "lr": self.config.lr_colors})
        return groups

    def render(self, cameras: Cameras, background: torch.Tensor | None = None) -> RenderOutput:
        c = self.config
        if self.texture is None:
            colors = {"vertex_colors": self.vertex_colors.clamp(0, 1)}
        else:
            colors = {"uvs": self.uvs, "texture": self.texture.clamp(0, 1)}
        return render(self.vertices, self.faces, cameras, **colors, background=background, ambient=c.ambient,
                      diffuse=c.diffuse, antialias_silhouettes=c.antialias, topology=self.topology,
                      backend=c.backend)

    def to_mesh(self, resolution: int = 128, bound: float = 0.6) -> "Mesh":
        """The mesh itself (nothing to convert)."""
        return self

    # ----- persistence ---------------------------------------------------------------------------

    def to_trimesh(self):
        """A trimesh.Trimesh with vertex colours (uint8) or a textured PBR material."""
        import trimesh
        from PIL import Image

        vertices, faces = self.vertices.detach().cpu().numpy(), self.faces.cpu().numpy()
        if self.texture is None:
            colors = (self.vertex_colors.detach().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
            return trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False)
        image = Image.fromarray((self.texture.detach().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8))
        material = trimesh.visual.material.PBRMaterial(baseColorTexture=image, baseColorFactor=[255, 255, 255, 255])
        visual = trimesh.visual.TextureVisuals(uv=self.uvs.cpu().numpy(), material=material)
        return trimesh.Trimesh(vertices, faces, visual=visual, process=False)

    def save(self, path) -> Path:
        """.glb or .obj (+Y up; a textured .obj also writes <stem>.mtl and <stem>.png beside it), or
        .ply (world frame, +z up)."""
        return save_trimesh(self.to_trimesh(), path)


def as_mesh(mesh, config: MeshConfig | None = None) -> Mesh:
    """A `Mesh`, or a trimesh.Trimesh converted to one."""
    return mesh if isinstance(mesh, Mesh) else Mesh.from_trimesh(mesh, config)


__all__ = ["Mesh", "MeshConfig", "as_mesh"]
