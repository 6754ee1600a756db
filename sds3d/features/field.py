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

import hashlib
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn

from sds3d.cameras import Cameras
from sds3d.errors import InputError

FORMAT = "sds3d-feature-field/1"
ATTRIBUTE = "feature_field"  # the attribute of a representation that carries its field


class FeatureField(nn.Module, ABC):
    """Base class. Subclasses define `kind`, `render`, `points` and `latents`; this class decodes.

    dim: the teacher's width D; latent_dim: the stored width d; teacher_name: whose features."""

    kind: str = ""
    learning_rate: float = 1e-2  # Adam's for the latents or head (the decoder has its own)

    def __init__(self, dim: int, latent_dim: int, teacher_name: str):
        super().__init__()
        if dim < 1 or latent_dim < 1:
            raise InputError(f"feature widths must be positive (teacher dim {dim}, latent dim {latent_dim})")
        self.dim, self.latent_dim, self.teacher_name = dim, latent_dim, teacher_name
        self.decoder = nn.Linear(latent_dim, dim)
        self.teacher_path = ""  # where the teacher was loaded from, for queries later ("" = shipped)

    def init_decoder(self, basis: torch.Tensor, mean: torch.Tensor) -> None:
        """Start the decoder as a PCA of teacher features: basis [D, d] (orthonormal columns), mean [D]."""
        with torch.no_grad():
            self.decoder.weight.copy_(basis)
            self.decoder.bias.copy_(mean)

    def decode_render(self, latent: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Composited latents [B, H, W, d] and alpha [B, H, W, 1] -> features [B, H, W, D]
        (W Z + b alpha: the composite of decoded points)."""
        return latent @ self.decoder.weight.T + alpha * self.decoder.bias

    def point_features(self, representation) -> torch.Tensor:
        """Decoded features [N, D] at `points(representation)` (not normalised)."""
        return self.decoder(self.latents(representation))

    # ----- per representation ----------------------------------------------------------------

    @abstractmethod
    def render(self, representation, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (features [B, H, W, D] alpha-weighted, alpha [B, H, W, 1] detached); gradients reach
        the field only."""

    @abstractmethod
    def points(self, representation) -> torch.Tensor:
        """The 3D points a selection masks [N, 3] (Gaussian centres, mesh vertices, grid cells)."""

    @abstractmethod
    def latents(self, representation) -> torch.Tensor:
        """Latents [N, d] at `points(representation)`."""

    @abstractmethod
    def geometry_tensors(self, representation) -> list[torch.Tensor]:
        """The tensors that define the geometry this field belongs to (for `fingerprint`)."""

    def lift(self, representation, cameras: Cameras, targets: torch.Tensor) -> None:
        """Optional initialisation from latent-space targets [V, h, w, d] before optimisation."""

    def fingerprint(self, representation) -> str:
        """sha256 (16 hex digits) of the geometry tensors' bytes."""
        digest = hashlib.sha256()
        for tensor in self.geometry_tensors(representation):
            digest.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def occupied(self, representation) -> torch.Tensor:
        """[N] bool: which `points` belong to the asset (all, except empty NeRF grid cells)."""
        return torch.ones(self.points(representation).shape[0], dtype=torch.bool)

    def check_fits(self, representation) -> None:
        """InputError when this field cannot belong to `representation` (wrong kind or size)."""

    def extra_config(self) -> dict:
        """Construction settings beyond the widths, saved with the field (JSON)."""
        return {}

    def load_extra_config(self, config: dict, representation) -> None:
        """Rebuild what `extra_config` describes, before the state dict is loaded."""


def field_for(representation, dim: int, latent_dim: int, teacher_name: str,
              generator: torch.Generator | None = None) -> FeatureField:
    """A fresh field of the kind `representation` needs (Gaussians, NeRF, DMTet or Mesh)."""
    from sds3d.representations import DMTet, Gaussians, Mesh, NeRF

    if isinstance(representation, Gaussians):
        from .gaussian_field import GaussianFeatureField

        return GaussianFeatureField(len(representation), dim, latent_dim, teacher_name)
    if isinstance(representation, NeRF):
        from .nerf_field import NeRFFeatureField

        return NeRFFeatureField(representation, dim, latent_dim, teacher_name, generator)
    if isinstance(representation, (Mesh, DMTet)):
        from .surface_field import SurfaceFeatureField

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
                "teacher_path": field.teacher_path, "dim": str(field.dim), "latent_dim": str(field.latent_dim),
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
