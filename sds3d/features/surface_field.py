"""A feature field on a surface (an explicit `Mesh`, or the mesh a `DMTet` extracts): a small head
on a multiresolution hash encoding of position, queried at the visible surface point of each pixel
(the mesh rasterizer's barycentrics, geometry detached) and decoded to the teacher's width.

Reference: Decomposing NeRF for Editing via Feature Field Distillation, arXiv:2205.15585
"""

from __future__ import annotations

import torch

from sds3d.cameras import Cameras
from sds3d.cuda.mesh_rasterizer import interpolate, rasterize_mesh
from sds3d.errors import InputError
from sds3d.representations.dmtet import BoxHashGrid, DMTet
from sds3d.representations.mesh import Mesh
from sds3d.representations.nerf import MLP
from .field_base import FeatureField


def surface_of(representation) -> tuple[torch.Tensor, torch.Tensor]:
    """(vertices [V, 3], faces [F, 3]) of a Mesh or of a DMTet's extracted mesh, without gradients."""
    with torch.no_grad():
        if isinstance(representation, DMTet):
            vertices, faces = representation.extract_mesh()
            return vertices.detach(), faces
        return representation.vertices.detach(), representation.faces


class SurfaceFeatureField(FeatureField):
    kind = "surface"

    def __init__(self, representation, dim: int, latent_dim: int, teacher_name: str,
                 generator: torch.Generator | None = None, hidden: int = 64, bound: float | None = None):
        """`bound`: the hash grid covers [-bound, bound]^3 (default: the surface's largest |coordinate|
        plus 5%)."""
        super().__init__(dim, latent_dim, teacher_name)
        if bound is None:
            vertices, _ = surface_of(representation)
            bound = 1.05 * float(vertices.abs().max()) if len(vertices) else 1.0
        self.bound = bound
        self.encoding = BoxHashGrid(bound, levels=8, log2_table_size=15, base_resolution=4, max_resolution=128)
        with torch.no_grad():
            width = self.encoding(torch.zeros(1, 3)).shape[-1]
        self.head = MLP(width, hidden, 1, latent_dim, generator)

    def extra_config(self) -> dict:
        return {"bound": self.bound}

    def load_extra_config(self, config: dict, representation) -> None:
        if "bound" in config and config["bound"] != self.bound:
            self.bound = float(config["bound"])
            self.encoding.bound = self.bound

    def check_fits(self, representation) -> None:
        if not isinstance(representation, (Mesh, DMTet)):
            raise InputError(f"a surface feature field does not fit a {type(representation).__name__}")

    def field(self, points: torch.Tensor) -> torch.Tensor:
        """World points [M, 3] -> latents [M, d]."""
        return self.head(self.encoding(points))

    def latents_at(self, points: torch.Tensor) -> torch.Tensor:
        return self.field(points)

    def render(self, representation, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        vertices, faces = surface_of(representation)
        fragments = rasterize_mesh(vertices, faces, cameras.to(vertices.device))
        mask = fragments.mask
        points = interpolate(vertices, fragments, faces)[mask]
        latent = torch.zeros(*mask.shape, self.latent_dim, device=vertices.device).index_put(
            mask.nonzero(as_tuple=True), self.field(points))
        alpha = mask[..., None].float()
        return self.decode_render(latent, alpha), alpha

    def points(self, representation) -> torch.Tensor:
        """The surface's vertices [V, 3] (a Mesh's attribute vertices; a DMTet's extracted mesh)."""
        return surface_of(representation)[0]

    def latents(self, representation) -> torch.Tensor:
        return self.field(self.points(representation))

    def geometry_tensors(self, representation) -> list[torch.Tensor]:
        if isinstance(representation, DMTet):
            return [representation.sdf, representation.deform]
        return [representation.positions, representation.faces]


__all__ = ["SurfaceFeatureField", "surface_of"]
