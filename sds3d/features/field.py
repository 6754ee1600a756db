"""Feature fields: D teacher-feature channels carried by a 3D representation, beside its geometry.

A field stores a low-dimensional latent of width d per point (per Gaussian, or from a small head on
a NeRF's or a surface's position encoding) and a linear 1x1 decoder up to the teacher's width D
(Feature-3DGS). Decoding is affine, f = W z + b, so a render decoded after compositing equals the
composite of decoded points: F(p) = W Z(p) + b alpha(p) with Z(p) = sum_i w_i(p) z_i. Renders are
alpha-weighted like `RenderOutput.features` (zero on the background).

The field is a separate module, attached to a representation as a plain attribute
(`attach_field`): it is not one of the representation's parameters or state-dict entries, and it
renders with the representation's geometry detached, so distilling features never moves geometry
(LERF). Fields are saved as safetensors with their teacher's name and widths and a fingerprint of
the geometry they were distilled on (`save_field`, `load_field`).

Reference: Feature 3DGS: Supercharging 3D Gaussian Splatting to Enable Distilled Feature Fields, arXiv:2312.03203
Reference: Decomposing NeRF for Editing via Feature Field Distillation, arXiv:2205.15585
Reference: LERF: Language Embedded Radiance Fields, arXiv:2303.09553
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from sds3d.errors import InputError
from sds3d.representations import DMTet, Gaussians, Mesh, NeRF
from .field_base import FeatureField
from .gaussian_field import GaussianFeatureField
from .nerf_field import NeRFFeatureField
from .surface_field import SurfaceFeatureField

FORMAT = "sds3d-feature-field/1"
ATTRIBUTE = "feature_field"  # the attribute of a representation that carries its field


def field_for(representation, dim: int, latent_dim: int, teacher_name: str,
              generator: torch.Generator | None = None) -> FeatureField:
    """A fresh field of the kind `representation` needs (Gaussians, NeRF, DMTet or Mesh)."""
    if isinstance(representation, Gaussians):
        return GaussianFeatureField(len(representation), dim, latent_dim, teacher_name)
    if isinstance(representation, NeRF):
        return NeRFFeatureField(representation, dim, latent_dim, teacher_name, generator)
    if isinstance(representation, (Mesh, DMTet)):
        return SurfaceFeatureField(representation, dim, latent_dim, teacher_name, generator)
    raise InputError(f"feature fields support Gaussians, NeRF, DMTet and meshes, not {type(representation).__name__}")


# ----- attaching -----------------------------------------------------------------------------------

def attach_field(representation, field: FeatureField) -> None:
    """Attach `field` to `representation` as a plain attribute: not a submodule, so the
    representation's parameters, state dict and optimisers are unchanged."""
    field.check_fits(representation)
    object.__setattr__(representation, ATTRIBUTE, field)


def feature_field_of(representation) -> FeatureField:
    """The field attached to `representation`; InputError naming `sds3d distill-features` if none."""
    field = representation.__dict__.get(ATTRIBUTE)
    if field is None:
        raise InputError("this asset has no feature field: run `sds3d distill-features RUN_DIR` first "
                         "(library: sds3d.features.distill.distill_features)")
    field.check_fits(representation)
    return field


# ----- files -----------------------------------------------------------------------------------

def field_filename(teacher_name: str, latent_dim: int) -> str:
    """`<teacher>-d<latent_dim>.safetensors` (characters other than letters, digits, - _ . become _)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in teacher_name) or "teacher"
    return f"{safe}-d{latent_dim}.safetensors"


def save_field(field: FeatureField, representation, path) -> Path:
    """Write `field` (with its teacher, widths and the geometry fingerprint) as safetensors,
    atomically (temp file + os.replace)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": FORMAT, "field": field.kind, "teacher": field.teacher_name,
                "teacher_path": field.teacher_path, "teacher_version": field.teacher_version,
                "dim": str(field.dim), "latent_dim": str(field.latent_dim),
                "points": str(field.points(representation).shape[0]), "geometry": field.fingerprint(representation),
                "config": json.dumps(field.extra_config())}
    tensors = {name: t.detach().contiguous().cpu() for name, t in field.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def read_field_metadata(path) -> dict:
    """The metadata of a saved field; InputError for a missing or foreign file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such feature-field file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception:  # safetensors raises SafetensorError / OSError / ValueError for damaged files
        raise InputError(f"{path}: not a readable safetensors file") from None
    if metadata.get("format") != FORMAT:
        raise InputError(f"{path}: not an sds3d feature field (format {metadata.get('format')!r})")
    return metadata


def load_field(path, representation, attach: bool = True) -> FeatureField:
    """A saved field for `representation` (attached to it unless `attach=False`); InputError when the
    file is damaged or was distilled on other geometry."""
    from safetensors.torch import load_file

    path = Path(path)
    metadata = read_field_metadata(path)
    try:
        field = field_for(representation, int(metadata["dim"]), int(metadata["latent_dim"]), metadata["teacher"])
    except (KeyError, ValueError):
        raise InputError(f"{path}: feature-field metadata is incomplete") from None
    if field.kind != metadata.get("field"):
        raise InputError(f"{path}: holds a {metadata.get('field')} field, but the asset needs a {field.kind} field")
    points = field.points(representation).shape[0]
    if metadata.get("points") != str(points):
        raise InputError(f"{path}: the feature field holds {metadata.get('points')} points but the asset has {points}; "
                         "run `sds3d distill-features` again")
    field.load_extra_config(json.loads(metadata.get("config", "{}")), representation)
    field.teacher_path = metadata.get("teacher_path", "")
    field.teacher_version = metadata.get("teacher_version", "")
    try:
        field.load_state_dict(load_file(str(path)))
    except (RuntimeError, KeyError, ValueError) as error:
        raise InputError(f"{path}: the feature field does not fit this asset ({str(error).splitlines()[0][:80]})") from None
    if metadata.get("geometry") != field.fingerprint(representation):
        raise InputError(f"{path}: these features were distilled on other geometry; run `sds3d distill-features` again")
    if attach:
        attach_field(representation, field)
    return field


__all__ = ["FeatureField", "attach_field", "feature_field_of", "field_for", "field_filename", "load_field",
           "read_field_metadata", "save_field", "FORMAT"]
