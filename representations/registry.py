"""The representations a run can optimise, by name. `sds3d generate --representation`, the config's
sections (`GenerateConfig.<name>`), the web UI and the generation loop all read `REPRESENTATIONS`.

Adding one is its module (a `Representation` subclass with the class methods `create(config,
generator)` and `initialise_from(source, config, generator, distill_steps)`, the method `to_mesh()`,
and a config dataclass) plus one line here; tests/test_representation_contract.py then checks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sds3d.errors import InputError
from .base import Representation
from .dmtet import DMTet, DMTetConfig
from .gaussians import Gaussians, GaussiansConfig
from .nerf import NeRF, NeRFConfig


@dataclass(frozen=True)
class RepresentationEntry:
    cls: type[Representation]
    config: type  # its config dataclass: the section of GenerateConfig named like the representation
    summary: str  # one line for --help and `sds3d config`
    aliases: tuple[str, ...] = ()  # older names, still read from config.json, --representation and --set
    native_kernels: tuple[str, ...] = ()  # its C++ kernels on the CPU (cuda/csrc), built while a run sets up
    run_defaults: tuple[tuple[str, object], ...] = (("prior", "embedded"), ("steps", 600), ("views_per_step", 4))
    # ^ the run settings it is tuned with: what a config that leaves them unset (None) gets


REPRESENTATIONS: dict[str, RepresentationEntry] = {
    "gaussians": RepresentationEntry(Gaussians, GaussiansConfig, "3D Gaussians, written as the 3DGS asset.ply",
                                     native_kernels=("gaussian_raster",),
                                     run_defaults=(("prior", "embedded-v2"), ("steps", 250), ("views_per_step", 3))),
    "nerf": RepresentationEntry(NeRF, NeRFConfig, "a hash-grid NeRF, written as a textured asset.glb",
                                native_kernels=("hash_grid",)),
    "dmtet": RepresentationEntry(DMTet, DMTetConfig, "a DMTet mesh (Magic3D's fine stage), written as a textured "
                                                     "asset.glb", aliases=("mesh",),
                                 native_kernels=("mesh_raster", "hash_grid")),
}
ALIASES = {alias: name for name, entry in REPRESENTATIONS.items() for alias in entry.aliases}


def canonical_name(name: str) -> str:
    """`name`, or the representation an alias stands for ("mesh" -> "dmtet")."""
    return ALIASES.get(name, name)


def representation_entry(name: str) -> RepresentationEntry:
    """The entry of `name` (an alias included); InputError naming the choices for an unknown one."""
    entry = REPRESENTATIONS.get(canonical_name(name))
    if entry is None:
        raise InputError(f"unknown representation {name!r}; choose one of {', '.join(REPRESENTATIONS)}")
    return entry


def run_section(config):
    """The section of a run's config (`GenerateConfig`) for its representation, with the schedules it
    counts in steps (Gaussians' densification) fitted to `config.steps` (a section's `for_steps`)."""
    section = getattr(config, canonical_name(config.representation), None)
    return section.for_steps(config.steps) if hasattr(section, "for_steps") else section


def create_representation(name: str, config, generator: torch.Generator | None = None) -> Representation:
    """A fresh representation `name` from its config section (what a run starts from)."""
    return representation_entry(name).cls.create(config, generator)


__all__ = ["RepresentationEntry", "REPRESENTATIONS", "ALIASES", "canonical_name", "representation_entry",
           "run_section", "create_representation"]
