"""Initialisation from retrieved assets: a library asset, turned to face the world's front and
scaled to the run's size, converted to the run's representation.

Conventions. The world frame is +z up with the object's front facing +x (a camera at azimuth 0
sees the front; `sds3d.cameras.orbit_position`). A retrieved asset's `yaw_degrees` is the azimuth
(degrees, about +z, counter-clockwise seen from above) of the camera that sees its front in its
own file frame after reading it into the world frame (.glb / .gltf / .obj are +Y up and come in
through `sds3d.export.load_trimesh`; 3DGS PLYs through `Gaussians.load_ply`). Turning the asset by
-yaw about +z brings that front to +x. Normalisation centres the bounding box at the origin and
scales its largest extent to `extent` (1, the micro-world's size: every object fits in
[-0.5, 0.5]^3, inside the Gaussians' initial ball of radius 0.5).

Conversions are the existing ones (`sds3d.representations.convert`): a mesh becomes Gaussians by
surface samples, a DMTet by its signed distance, a NeRF by render-and-fit distillation; a 3DGS
asset stays Gaussians (its parameters carried over) or goes through its density surface.

Reference: "Retrieval-Augmented Score Distillation for Text-to-3D Generation", Seo et al. 2024,
arXiv:2402.02972.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from sds3d.errors import InputError
from sds3d.representations import Gaussians, Representation
from sds3d.representations.mesh import Mesh

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")


def is_gaussian_ply(path: Path) -> bool:
    """True when a .ply's header declares 3DGS properties (opacity and f_dc_0), not a mesh."""
    if path.suffix.lower() != ".ply":
        return False
    with open(path, "rb") as handle:
        header = handle.read(4096).split(b"end_header")[0]
    return b"property float opacity" in header and b"f_dc_0" in header


def load_asset(path: str | Path) -> Representation:
    """A library asset read into the world frame: a `Gaussians` for a 3DGS PLY, else a `Mesh`.
    InputError (one line) for a missing, unreadable or unsupported file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such asset file")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise InputError(f"{path}: unsupported asset type {path.suffix!r} (use {', '.join(MESH_SUFFIXES)})")
    if is_gaussian_ply(path):
        return Gaussians.load_ply(path)
    return Mesh.load(path)


def yaw_rotation(degrees: float) -> torch.Tensor:
    """[3, 3] float64 rotation by `degrees` about +z (counter-clockwise seen from above)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


@torch.no_grad()
def front_to_world(asset: Representation, yaw_degrees: float, extent: float = 1.0) -> Representation:
    """The asset turned by -yaw_degrees about +z (its front to +x), its bounding box centred at the
    origin and its largest extent scaled to `extent`; modified in place and returned. Gaussians
    move their means, rotate their quaternions and SH, and scale their sizes (log-scales shift)."""
    from sds3d.axes import rotate_gaussians

    R = yaw_rotation(-yaw_degrees)
    if isinstance(asset, Mesh):
        points = (asset.positions.double() @ R.T).float()
    elif isinstance(asset, Gaussians):
        means, quats, shN = rotate_gaussians(asset.params["means"], asset.params["quats"], asset.params["shN"], R)
        asset.params["quats"].copy_(quats)
        asset.params["shN"].copy_(shN)
        points = means
    else:
        raise TypeError(f"cannot place a {type(asset).__name__}; expected a Mesh or Gaussians")
    lo, hi = points.min(0).values, points.max(0).values
    size = float((hi - lo).max())
    if not math.isfinite(size) or size <= 0:
        raise InputError("the retrieved asset is degenerate (zero or non-finite size)")
    factor = extent / size
    points = (points - (lo + hi) / 2) * factor
    if isinstance(asset, Mesh):
        asset.positions.copy_(points)
    else:
        asset.params["means"].copy_(points)
        asset.params["scales"].add_(math.log(factor))
    return asset


def gaussians_with_config(source: Gaussians, config) -> Gaussians:
    """A 3DGS asset as the run's Gaussians (its config: SH degree, features, learning rates): means,
    scales, rotations, opacities and base colour carried over; higher SH bands kept where both have
    them, the rest zero."""
    count = len(source)
    target = Gaussians(source.params["means"].detach(), torch.zeros(count, 3), scales=torch.ones(count, 3),
                       opacities=torch.full((count,), 0.5), config=config)
    with torch.no_grad():
        for name in ("means", "scales", "quats", "opacities", "sh0"):
            target.params[name].copy_(source.params[name])
        bands = min(source.params["shN"].shape[1], target.params["shN"].shape[1])
        target.params["shN"][:, :bands] = source.params["shN"][:, :bands]
    return target


def asset_to_representation(asset: Representation, name: str, config, generator: torch.Generator | None = None,
                            distill_steps: int = 300) -> Representation:
    """`asset` (already in the world frame) as the run's representation `name` ("gaussians" |
    "nerf" | "mesh" = DMTet) with the run's config section `config`."""
    from sds3d.representations.convert import initialise_from

    if name == "gaussians" and isinstance(asset, Gaussians):
        return gaussians_with_config(asset, config)
    return initialise_from(asset, name, config, generator, distill_steps=distill_steps)


def initial_representations(assets: list[tuple[str | Path, float]], name: str, config, count: int,
                            generator: torch.Generator | None = None, extent: float = 1.0,
                            distill_steps: int = 300) -> list[Representation]:
    """`count` initial representations (one per VSD particle) from (path, yaw_degrees) pairs, best
    first: particle i starts from asset i mod len(assets). Each asset is read once and converted
    once per particle that uses it (particles never share parameters)."""
    if not assets:
        raise InputError("no retrieved assets to initialise from")
    placed: dict[int, Representation] = {}
    out = []
    for index in range(count):
        slot = index % len(assets)
        if slot not in placed:
            path, yaw = assets[slot]
            placed[slot] = front_to_world(load_asset(path), yaw, extent)
        out.append(asset_to_representation(placed[slot], name, config, generator, distill_steps))
    return out


__all__ = ["MESH_SUFFIXES", "is_gaussian_ply", "load_asset", "yaw_rotation", "front_to_world",
           "gaussians_with_config", "asset_to_representation", "initial_representations"]
