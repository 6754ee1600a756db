"""The base class of feature fields: d latent channels per point, decoded by a 1x1 (linear) layer to
the teacher's width. What a field is and how it is stored: `sds3d.features.field`.

Reference: Feature 3DGS: Supercharging 3D Gaussian Splatting to Enable Distilled Feature Fields, arXiv:2312.03203
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

import torch
from torch import nn

from sds3d.cameras import Cameras
from sds3d.errors import InputError


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
        self.teacher_version = ""  # the teacher's `version`: its features mean nothing to another version

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

    def latents_at(self, points: torch.Tensor) -> torch.Tensor:
        """Latents [M, d] at any world points [M, 3], for fields that are a function of position;
        InputError for fields stored per point (Gaussians' latents)."""
        raise InputError(f"a {self.kind} feature field is stored per point: it cannot be queried at other points")

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


__all__ = ["FeatureField"]
