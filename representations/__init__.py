"""Differentiable 3D representations: 3D Gaussians, hash-grid NeRF, meshes (DMTet for optimisation,
explicit meshes for loading and editing); conversions between them live in `convert`."""

from .base import Representation
from .dmtet import DMTet, DMTetConfig
from .gaussians import Gaussians, GaussiansConfig
from .mesh import Mesh, MeshConfig
from .nerf import NeRF, NeRFConfig

__all__ = ["Representation", "Gaussians", "GaussiansConfig", "NeRF", "NeRFConfig", "DMTet", "DMTetConfig", "Mesh",
           "MeshConfig"]
