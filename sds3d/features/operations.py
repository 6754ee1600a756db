"""Edits of a selection (a [N] bool mask from `select_points`): extract, delete, recolour.

Gaussians: extract / delete keep a subset of the Gaussians (with the matching rows of their feature
field, so the result can be queried again); recolour sets the SH DC term of the selected Gaussians
to a colour and clears their higher SH bands. Meshes (vertex colours): extract / delete keep the
faces whose three vertices are all selected / not all selected; recolour sets vertex colours.

Colours: a micro-world colour name ("blue", or a synonym such as "navy"), "#rrggbb", or "r,g,b"
with components in [0, 1].
"""

from __future__ import annotations

import copy
import re

import torch

from sds3d.errors import InputError
from .field import ATTRIBUTE


def parse_color(color) -> torch.Tensor:
    """A colour name, "#rrggbb", "r,g,b" in [0, 1] or a sequence of 3 floats -> rgb [3] in [0, 1]."""
    from sds3d.world import COLORS

    if not isinstance(color, str):
        rgb = torch.as_tensor(color, dtype=torch.float32).reshape(-1)
        if rgb.shape != (3,) or not torch.isfinite(rgb).all() or rgb.min() < 0 or rgb.max() > 1:
            raise InputError(f"colour {color!r}: give three numbers in [0, 1]")
        return rgb
    text = color.strip().lower()
    for spec in COLORS.values():
        if text == spec.name or text in spec.synonyms:
            return torch.tensor(spec.rgb, dtype=torch.float32)
    if re.fullmatch(r"#[0-9a-f]{6}", text):
        return torch.tensor([int(text[i:i + 2], 16) / 255 for i in (1, 3, 5)], dtype=torch.float32)
    parts = text.split(",")
    if len(parts) == 3:
        try:
            return parse_color([float(p) for p in parts])
        except ValueError:
            pass
    raise InputError(f"colour {color!r}: use a name ({', '.join(COLORS)}), #rrggbb or r,g,b in [0, 1]")


def _check_mask(representation, mask: torch.Tensor, count: int) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool or mask.shape != (count,):
        raise InputError(f"the selection must be a [{count}] bool mask, got {mask.dtype} {tuple(mask.shape)}")
    return mask


def copy_asset(representation):
    """A deep copy (with its feature field, if attached)."""
    return copy.deepcopy(representation)


def _subset_gaussians(gaussians, keep: torch.Tensor):
    from sds3d.representations import Gaussians

    out = Gaussians(gaussians.means.detach()[keep], torch.zeros(int(keep.sum()), 3), config=copy.deepcopy(gaussians.config),
                    scales=torch.ones(int(keep.sum()), 3))
    with torch.no_grad():
        for name, param in gaussians.params.items():
            out.params[name] = torch.nn.Parameter(param.detach()[keep].clone())
    field = gaussians.__dict__.get(ATTRIBUTE)
    if field is not None:
        sub = copy.deepcopy(field)
        sub.latent = torch.nn.Parameter(field.latent.detach()[keep].clone())
        object.__setattr__(out, ATTRIBUTE, sub)
    return out


def _subset_mesh(mesh, keep_vertex: torch.Tensor, all_selected: bool):
    """The faces whose three vertices are all in `keep_vertex` (all_selected) or not all of them."""
    from sds3d.representations import Mesh

    inside = keep_vertex[mesh.faces].all(-1)
    faces = mesh.faces[inside if all_selected else ~inside]
    if len(faces) == 0:
        raise InputError("the selection leaves no triangle of the mesh")
    used, remap = torch.unique(faces, return_inverse=True)
    colors = None if mesh.vertex_colors is None else mesh.vertex_colors.detach()[used]
    kwargs = {"vertex_colors": colors} if mesh.texture is None else {"uvs": mesh.uvs[used], "texture": mesh.texture.detach()}
    out = Mesh(mesh.vertices.detach()[used], remap.reshape(-1, 3), config=copy.deepcopy(mesh.config), **kwargs)
    field = mesh.__dict__.get(ATTRIBUTE)
    if field is not None:  # a surface field is a function of position: it fits the subset as well
        object.__setattr__(out, ATTRIBUTE, copy.deepcopy(field))
    return out


def _points(representation) -> int:
    from sds3d.representations import Gaussians, Mesh

    if isinstance(representation, Gaussians):
        return len(representation)
    if isinstance(representation, Mesh):
        return len(representation.vertex_to_position)
    raise InputError(f"extract, delete and recolour work on Gaussians and meshes, not {type(representation).__name__}; "
                     "export the asset as a mesh (sds3d export --out asset.glb) and select on that")


def extract(representation, mask: torch.Tensor):
    """A new asset holding only the selected points (Gaussians) or faces (mesh)."""
    from sds3d.representations import Gaussians

    mask = _check_mask(representation, mask, _points(representation))
    if isinstance(representation, Gaussians):
        return _subset_gaussians(representation, mask)
    return _subset_mesh(representation, mask, all_selected=True)


def delete(representation, mask: torch.Tensor):
    """A new asset without the selected points (Gaussians) or faces (mesh)."""
    from sds3d.representations import Gaussians

    mask = _check_mask(representation, mask, _points(representation))
    if isinstance(representation, Gaussians):
        if mask.all():
            raise InputError("the selection covers the whole asset: deleting it would leave nothing")
        return _subset_gaussians(representation, ~mask)
    return _subset_mesh(representation, mask, all_selected=False)


@torch.no_grad()
def recolour(representation, mask: torch.Tensor, color) -> None:
    """In place: the selected Gaussians take `color` (SH DC = that colour, higher bands 0), or the
    selected vertices of a vertex-coloured mesh."""
    from sds3d.representations import Gaussians
    from sds3d.representations.spherical_harmonics import rgb_to_sh0

    mask = _check_mask(representation, mask, _points(representation))
    rgb = parse_color(color)
    if isinstance(representation, Gaussians):
        representation.params["sh0"][mask] = rgb_to_sh0(rgb)[None, None, :]
        representation.params["shN"][mask] = 0.0
        return
    if representation.vertex_colors is None:
        raise InputError("recolour works on vertex-coloured meshes; this mesh is textured")
    representation.vertex_colors[mask] = rgb


__all__ = ["copy_asset", "delete", "extract", "parse_color", "recolour"]
