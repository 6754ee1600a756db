"""Differentiable 3D representations: 3D Gaussians (more to come: hash-grid NeRF, meshes)."""

from .base import Representation
from .gaussians import Gaussians, GaussiansConfig

__all__ = ["Representation", "Gaussians", "GaussiansConfig"]
