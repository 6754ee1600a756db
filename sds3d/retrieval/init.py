"""Initialisation from retrieved assets: each retrieved asset, turned to face the world's front by its
yaw and normalised (`sds3d.retrieval.library.load_asset`: +z up, front +x, centred, largest extent 1,
the micro-world's size, inside the Gaussians' initial ball of radius 0.5), converted to the run's
representation.

Conversions are the existing ones (`sds3d.representations.convert`): a mesh becomes Gaussians by
surface samples, a DMTet by its signed distance, a NeRF by render-and-fit distillation; a 3DGS
asset stays Gaussians (its parameters carried over) or goes through its density surface. With VSD
particles, each particle starts from its own asset (ProlificDreamer's variational distribution
initialised by the retrieved assets, as ReDream does).

Reference: "Retrieval-Augmented Score Distillation for Text-to-3D Generation", Seo et al. 2024,
arXiv:2402.02972.
"""

from __future__ import annotations

import torch

from sds3d.errors import InputError
from sds3d.representations import Gaussians, Representation


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


def initial_representations(retrieved, name: str, config, count: int, generator: torch.Generator | None = None,
                            distill_steps: int = 300) -> list[Representation]:
    """`count` initial representations (one per VSD particle) from retrieved assets (objects with
    `path` and `yaw_degrees`, as `sds3d.retrieval.retrieve.Retrieved`), best first: particle i
    starts from asset i mod len(retrieved). Each asset is read once and converted once per
    particle that uses it (particles never share parameters)."""
    from .library import load_asset

    if not retrieved:
        raise InputError("no retrieved assets to initialise from")
    placed: dict[int, Representation] = {}
    out = []
    for index in range(count):
        slot = index % len(retrieved)
        if slot not in placed:
            placed[slot] = load_asset(retrieved[slot].path, retrieved[slot].yaw_degrees)
        out.append(asset_to_representation(placed[slot], name, config, generator, distill_steps))
    return out


__all__ = ["gaussians_with_config", "asset_to_representation", "initial_representations"]
