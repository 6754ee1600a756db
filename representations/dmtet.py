"""DMTet (Shen et al. 2021), as Magic3D uses it for its fine stage: a signed distance value and a
bounded offset per vertex of a tetrahedral grid, turned into a triangle mesh by differentiable
marching tetrahedra, coloured by a texture field, rendered by the mesh renderer (with silhouette
antialiasing) so an image loss reaches the SDF values and the offsets.

Conventions: SDF < 0 inside. The grid covers [-bound, bound]^3 (`tet_grid`); a vertex moves by at
most `deform_scale` grid spacings along each axis, p = grid + deform_scale * spacing * tanh(deform). Output
triangles are counter-clockwise seen from outside (outward normals) while no tetrahedron is
inverted by the offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sds3d.cameras import Cameras
from sds3d.cuda.hash_grid import HashGridEncoding
from sds3d.types import RenderOutput
from .base import Representation
from .mesh import Mesh, as_mesh
from .mesh_render import render
from .mesh_sdf import mesh_sdf_grid
from .tet_grid import cube_tetrahedra, grid_points

# Local edges of a tetrahedron (vertex pairs) and, for each of the 16 inside/outside cases (bit i
# set when vertex i is inside), up to two triangles as local edge indices (-1: none). Triangles are
# ordered so that their normal points from the inside vertices to the outside ones in a positively
# oriented tetrahedron; with two vertices inside, the four crossed edges form a quad split in two.
# The comments give each case in binary, vertex 3 first.
TET_EDGES = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
TRIANGLE_TABLE = torch.tensor([
    [[-1, -1, -1], [-1, -1, -1]],  # 0000
    [[0, 1, 2], [-1, -1, -1]],  # 0001
    [[0, 4, 3], [-1, -1, -1]],  # 0010
    [[1, 2, 4], [1, 4, 3]],  # 0011
    [[1, 3, 5], [-1, -1, -1]],  # 0100
    [[0, 5, 2], [0, 3, 5]],  # 0101
    [[0, 4, 5], [0, 5, 1]],  # 0110
    [[2, 4, 5], [-1, -1, -1]],  # 0111
    [[2, 5, 4], [-1, -1, -1]],  # 1000
    [[0, 1, 5], [0, 5, 4]],  # 1001
    [[0, 5, 3], [0, 2, 5]],  # 1010
    [[1, 5, 3], [-1, -1, -1]],  # 1011
    [[1, 3, 4], [1, 4, 2]],  # 1100
    [[0, 3, 4], [-1, -1, -1]],  # 1101
    [[0, 2, 1], [-1, -1, -1]],  # 1110
    [[-1, -1, -1], [-1, -1, -1]],  # 1111
])


def marching_tetrahedra(vertices: torch.Tensor, tets: torch.Tensor, sdf: torch.Tensor):
    """vertices [V, 3], tets [T, 4] (positively oriented), sdf [V] (< 0 inside) -> (mesh vertices
    [M, 3], faces [K, 3] int64). One mesh vertex per grid edge whose ends have different signs, at
    the zero of the linear interpolation of the SDF along it, so the mesh is closed wherever the
    zero set stays inside the grid, and differentiable w.r.t. `vertices` and `sdf`."""
    device = vertices.device
    with torch.no_grad():
        inside = sdf < 0
        occupied = inside[tets]  # [T, 4]
        count = occupied.sum(-1)
        crossed = (count > 0) & (count < 4)
        tets, occupied = tets[crossed], occupied[crossed]
        edges = tets[:, TET_EDGES.to(device)].sort(-1).values  # [T', 6, 2]
        edge_crossed = inside[edges[..., 0]] != inside[edges[..., 1]]  # [T', 6]
        keys = edges[..., 0] * vertices.shape[0] + edges[..., 1]
        unique_keys, mesh_vertex = torch.unique(keys[edge_crossed], return_inverse=True)
        local = torch.full(edge_crossed.shape, -1, dtype=torch.int64, device=device)
        local[edge_crossed] = mesh_vertex  # [T', 6] mesh vertex of each crossed local edge
        case = (occupied.long() * torch.tensor([1, 2, 4, 8], device=device)).sum(-1)
        table = TRIANGLE_TABLE.to(device)[case]  # [T', 2, 3]
        has = table[..., 0] >= 0
        faces = local.gather(1, table.clamp(min=0).reshape(len(case), 6)).reshape(-1, 2, 3)[has]
    a, b = unique_keys // vertices.shape[0], unique_keys % vertices.shape[0]
    sdf_a, sdf_b = sdf[a, None], sdf[b, None]
    weight = sdf_a / (sdf_a - sdf_b)
    return vertices[a] + weight * (vertices[b] - vertices[a]), faces


class FourierFeatures(nn.Module):
    """points [N, 3] in [-bound, bound]^3 -> [N, 3 + 6 n]: x, then sin and cos of 2^k pi x for
    k < n, with x = points / bound."""

    def __init__(self, n_frequencies: int = 6, bound: float = 1.0):
        super().__init__()
        self.bound = bound
        self.register_buffer("frequencies", torch.pi * 2.0 ** torch.arange(n_frequencies), persistent=False)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        x = points / self.bound
        angles = (x[..., None] * self.frequencies).flatten(-2)
        return torch.cat([x, angles.sin(), angles.cos()], -1)


class BoxHashGrid(nn.Module):
    """points [N, 3] in [-bound, bound]^3 -> [N, L F] multiresolution hash-grid features (the
    native kernel of `cuda/hash_grid.py`; points are mapped to [0, 1]^3 and clamped there)."""

    def __init__(self, bound: float, levels: int, log2_table_size: int, base_resolution: int,
                 max_resolution: int, backend: str = "auto"):
        super().__init__()
        self.bound = bound
        self.grid = HashGridEncoding(levels, 2, log2_table_size, base_resolution, max_resolution=max_resolution,
                                     backend=backend, generator=torch.Generator().manual_seed(0))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.grid(((points / self.bound + 1) / 2).clamp(0, 1))


class ColorField(nn.Module):
    """points [N, 3] -> rgb [N, 3] in (0, 1): sigmoid(MLP(encoding(points))). `encoding` is any
    module mapping [N, 3] world points to [N, D] features (Fourier features, a hash grid, ...); D
    is read from one probe call at construction."""

    def __init__(self, encoding: nn.Module, hidden: int = 64, layers: int = 2):
        super().__init__()
        self.encoding = encoding
        with torch.no_grad():
            dim = encoding(torch.zeros(1, 3)).shape[-1]
        blocks = []
        for _ in range(layers):
            blocks += [nn.Linear(dim, hidden), nn.ReLU()]
            dim = hidden
        self.mlp = nn.Sequential(*blocks, nn.Linear(dim, 3))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(self.encoding(points)))

    def init_color(self, rgb: torch.Tensor) -> None:
        """Start from a uniform colour rgb [3] in (0, 1): the output bias is its logit."""
        with torch.no_grad():
            self.mlp[-1].bias.copy_(torch.logit(torch.as_tensor(rgb, dtype=torch.float32).clamp(0.01, 0.99)))


@dataclass
class DMTetConfig:
    resolution: int = 32  # grid cells per axis; 6 R^3 tetrahedra
    bound: float = 0.6  # the grid covers [-bound, bound]^3 (micro-world objects fit in [-0.5, 0.5]^3)
    deform_scale: float = 0.45  # largest vertex offset, in grid spacings
    # colour field: sigmoid(MLP(encoding)), encoding "hash_grid" (as Magic3D's texture field) or
    # "fourier" (sin/cos of 2^k pi x, k < fourier_frequencies)
    color_encoding: str = "hash_grid"
    hash_levels: int = 8
    hash_log2_table_size: int = 15
    hash_base_resolution: int = 4
    hash_max_resolution: int = 128  # ~1/128 of the box: finer than a 32x32 render resolves
    fourier_frequencies: int = 6
    color_hidden: int = 64
    ambient: float = 0.35  # shading as in MeshConfig
    diffuse: float = 0.65
    antialias: bool = True
    backend: str = "auto"  # rasterizer and hash grid: auto | native | reference
    # smoothness term added to the loss (meta["regularizer_loss"]); 1000 and learning rates of 1e-3
    # turned a jagged SDS fine stage (embedded prior, "a yellow chair" from a NeRF) into a smooth one
    normal_consistency_weight: float = 1000.0
    lr_sdf: float = 1e-3
    lr_deform: float = 1e-3
    lr_color: float = 1e-2


def default_color_field(c: DMTetConfig) -> ColorField:
    if c.color_encoding == "hash_grid":
        encoding = BoxHashGrid(c.bound, c.hash_levels, c.hash_log2_table_size, c.hash_base_resolution,
                               c.hash_max_resolution, c.backend)
    elif c.color_encoding == "fourier":
        encoding = FourierFeatures(c.fourier_frequencies, c.bound)
    else:
        raise ValueError(f"color_encoding must be 'hash_grid' or 'fourier', got {c.color_encoding!r}")
    return ColorField(encoding, c.color_hidden)


class DMTet(Representation):
    def __init__(self, sdf: torch.Tensor | None = None, config: DMTetConfig | None = None,
                 color_field: nn.Module | None = None):
        """sdf [(R + 1)^3] on `grid_points(R, bound)` (default: a sphere of radius bound / 2);
        color_field: points [N, 3] -> rgb [N, 3] (default `default_color_field(config)`)."""
        super().__init__()
        self.config = c = config or DMTetConfig()
        self.register_buffer("grid", grid_points(c.resolution, c.bound), persistent=False)
        self.register_buffer("tets", cube_tetrahedra(c.resolution), persistent=False)
        if sdf is None:
            sdf = self.grid.norm(dim=-1) - c.bound / 2
        self.sdf = nn.Parameter(torch.as_tensor(sdf, dtype=torch.float32).reshape(-1).clone())
        self.deform = nn.Parameter(torch.zeros_like(self.grid))
        self.color_field = color_field or default_color_field(c)

    @property
    def spacing(self) -> float:
        return 2 * self.config.bound / self.config.resolution

    @classmethod
    def create(cls, config: DMTetConfig, generator: torch.Generator | None = None) -> "DMTet":
        """A run's fresh start: the default sphere of radius bound / 2 (no random draws)."""
        return cls(config=config)

    @classmethod
    def initialise_from(cls, source: Representation, config: DMTetConfig, generator: torch.Generator | None = None,
                        distill_steps: int = 300) -> "DMTet":
        """The signed distance and colours of `source`'s surface (`mesh_to_dmtet` of its `to_mesh()` within
        the grid's bound); `distill_steps` is unused."""
        return mesh_to_dmtet(source.to_mesh(bound=config.bound), config, generator=generator)

    @classmethod
    def from_sdf(cls, fn: Callable[[torch.Tensor], torch.Tensor], config: DMTetConfig | None = None,
                 color_field: nn.Module | None = None) -> "DMTet":
        """fn(points [N, 3]) -> signed distance [N] (< 0 inside), evaluated on the grid."""
        config = config or DMTetConfig()
        with torch.no_grad():
            sdf = fn(grid_points(config.resolution, config.bound))
        return cls(sdf, config, color_field)

    @classmethod
    def from_density(cls, fn: Callable[[torch.Tensor], torch.Tensor], threshold: float,
                     config: DMTetConfig | None = None, color_field: nn.Module | None = None) -> "DMTet":
        """A density or opacity field fn(points [N, 3]) -> [N] (inside where > threshold):
        sdf = threshold - fn(points), whose zero set is the field's level set (as Magic3D starts
        its fine stage from the coarse NeRF's density)."""
        return cls.from_sdf(lambda points: threshold - fn(points), config, color_field)

    def vertex_positions(self) -> torch.Tensor:
        """Deformed grid vertices [(R + 1)^3, 3]."""
        return self.grid + self.config.deform_scale * self.spacing * torch.tanh(self.deform)

    def extract_mesh(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (vertices [M, 3], faces [K, 3]), differentiable w.r.t. `sdf` and `deform`."""
        return marching_tetrahedra(self.vertex_positions(), self.tets, self.sdf)

    def to_mesh(self, resolution: int = 128, bound: float = 0.6) -> Mesh:
        """The extracted mesh (its own grid: `resolution` and `bound` are unused), vertex colours from
        the colour field."""
        with torch.no_grad():
            vertices, faces = self.extract_mesh()
            return Mesh(vertices, faces, self.color_field(vertices).clamp(0, 1))

    def param_groups(self) -> list[dict]:
        c = self.config
        return [{"name": "sdf", "params": [self.sdf], "lr": c.lr_sdf},
                {"name": "deform", "params": [self.deform], "lr": c.lr_deform},
                {"name": "color", "params": list(self.color_field.parameters()), "lr": c.lr_color}]

    def render(self, cameras: Cameras, background: torch.Tensor | None = None) -> RenderOutput:
        c = self.config
        vertices, faces = self.extract_mesh()
        if len(faces) == 0:  # empty zero set: background only, still connected to the parameters
            B, H, W = len(cameras), cameras.height, cameras.width
            like = {"dtype": vertices.dtype, "device": vertices.device}
            background = torch.ones(3, **like) if background is None else torch.as_tensor(background, **like)
            keep = 0 * self.sdf.sum()
            zeros = torch.zeros(B, H, W, 1, **like) + keep
            return RenderOutput(rgb=background.reshape(-1, 1, 1, 3).expand(B, H, W, 3) + keep, alpha=zeros, depth=zeros,
                                normal=torch.zeros(B, H, W, 3, **like), meta={})
        output = render(vertices, faces, cameras, color_fn=self.color_field, background=background,
                        ambient=c.ambient, diffuse=c.diffuse, antialias_silhouettes=c.antialias, backend=c.backend)
        if c.normal_consistency_weight and torch.is_grad_enabled():
            smoothness = normal_consistency(vertices, faces)
            output.meta = {**(output.meta or {}), "regularizers": {"normal_consistency": smoothness},
                           "regularizer_loss": c.normal_consistency_weight * smoothness}
        return output


def normal_consistency(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos between the normals of faces sharing an edge (0 on a plane): the smoothness
    term Magic3D's fine stage uses. vertices [V, 3], faces [F, 3] (shared vertices) -> scalar."""
    corners = vertices[faces]
    normals = torch.nn.functional.normalize(
        torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), dim=-1)
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values  # [3F, 2]
    face_of_edge = torch.arange(len(faces), device=faces.device).repeat(3)
    # one int64 key per edge (a * V + b, b < V) orders edges as their rows do; a 1-D unique is >10x faster
    _, edge_id = torch.unique(edges[:, 0] * len(vertices) + edges[:, 1], return_inverse=True)
    order = torch.argsort(edge_id, stable=True)
    same = edge_id[order][1:] == edge_id[order][:-1]  # consecutive entries of one edge: adjacent faces
    a, b = face_of_edge[order][:-1][same], face_of_edge[order][1:][same]
    if len(a) == 0:
        return vertices.sum() * 0
    return (1 - (normals[a] * normals[b]).sum(-1)).mean()



def mesh_to_dmtet(mesh, config: DMTetConfig | None = None, color_steps: int = 300, color_samples: int = 20000,
                  generator: torch.Generator | None = None) -> DMTet:
    """A DMTet whose SDF is the mesh's signed distance on its grid (`mesh_sdf_grid`) and whose
    colour field starts at the mean surface colour and is fitted (Adam, MSE, batches of 4096) to
    the colours of area-uniform surface samples."""
    mesh = as_mesh(mesh)
    config = config or DMTetConfig()
    sdf = mesh_sdf_grid(mesh.vertices, mesh.faces, config.resolution, config.bound)
    dmtet = DMTet(sdf, config)
    points, _, colors, _, _ = mesh.sample_surface(color_samples, generator)
    dmtet.color_field.init_color(colors.mean(0))
    optimizer = torch.optim.Adam(dmtet.color_field.parameters(), lr=config.lr_color)
    for _ in range(color_steps):
        batch = torch.randint(0, color_samples, (4096,), generator=generator)
        loss = F.mse_loss(dmtet.color_field(points[batch]), colors[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return dmtet


__all__ = ["DMTet", "mesh_to_dmtet", "normal_consistency", "DMTetConfig", "ColorField", "FourierFeatures", "BoxHashGrid",
           "default_color_field", "marching_tetrahedra", "TRIANGLE_TABLE"]
