"""Guidance variants and priors by name, for the CLI, the config, the web UI, the library and the
benchmarks. Adding a variant is its module (a `Guidance` subclass and its config dataclass) plus one
line in `GUIDANCE`; its config becomes the section of the same name in `GenerateConfig`."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import torch

from sds3d.errors import InputError
from .priors.prior import DiffusionPrior, resolve_device
from .priors.prior_type import is_local, prior_identity, prior_type, shipped_prior_dir

# name -> (module, class, config class), in the order the config lists their sections
GUIDANCE = {
    "sds": ("sds", "SDS", "SDSConfig"), "nfsd": ("nfsd", "NFSD", "NFSDConfig"), "csd": ("csd", "CSD", "CSDConfig"),
    "sdi": ("sdi", "SDI", "SDIConfig"), "ism": ("ism", "ISM", "ISMConfig"), "tsm": ("tsm", "TSM", "TSMConfig"),
    "cds": ("cds", "CDS", "CDSConfig"), "dsd": ("dsd", "DSD", "DSDConfig"), "vsd": ("vsd", "VSD", "VSDConfig"),
    "cfd": ("cfd", "CFD", "CFDConfig"),
    "redream": ("redream", "ReDream", "ReDreamConfig"),
}
# variants that score with a prior adapted on retrieved assets: they need an asset library
# (`sds3d.retrieval`), so the library-free suites (the guidance table) leave them out
LIBRARY_GUIDANCE = ("redream",)


def _attribute(name: str, index: int):
    module, *names = GUIDANCE[name]
    return getattr(import_module(f"{__package__}.{module}"), names[index])


def guidance_configs() -> dict[str, type]:
    """name -> the variant's config dataclass (e.g. "sds" -> SDSConfig), in `GUIDANCE` order."""
    return {name: _attribute(name, 1) for name in GUIDANCE}


def build_guidance(name: str, prior: DiffusionPrior, config, total_steps: int):
    """`config` is the variant's own config dataclass (e.g. SDSConfig)."""
    if name not in GUIDANCE:
        raise ValueError(f"unknown guidance {name!r}; choose one of {', '.join(sorted(GUIDANCE))}")
    return _attribute(name, 0)(prior, config, total_steps=total_steps)


def load_prior(spec: str, device: str | torch.device = "cpu") -> DiffusionPrior:
    """"embedded" -> the shipped micro-world prior ("embedded-v1", "embedded-v2", "embedded-v3":
    a shipped version); a folder or hub id -> the prior it holds, told
    apart by `prior_type` (an embedded-prior export, Stable Diffusion or DeepFloyd IF stage I)."""
    device = resolve_device(device)
    kind = prior_type(spec)
    source = str(Path(spec).expanduser()) if is_local(spec) else spec
    if kind == "embedded":
        from .priors.embedded_prior import EmbeddedPrior

        prior = EmbeddedPrior.load(None if spec == "embedded" else shipped_prior_dir(spec) or source, device=device)
    elif kind == "if":
        from .priors.deepfloyd_if import DeepFloydIFPrior

        prior = DeepFloydIFPrior.from_pretrained(source, device=device)
    else:
        from .priors.stable_diffusion import StableDiffusionPrior

        prior = StableDiffusionPrior.from_pretrained(source, device=device)
    prior.loaded_from = prior_identity(spec)
    return prior


def check_prior_is(prior: DiffusionPrior, spec: str) -> None:
    """InputError when `prior` was loaded (`load_prior`) from another prior than `spec` names: a run's
    config.json must say which prior made it. Priors built otherwise (tests' tiny ones) pass."""
    if prior.loaded_from is not None and prior.loaded_from != prior_identity(spec):
        raise InputError(f"the prior passed was loaded from {prior.loaded_from}, but the config's prior is {spec!r} "
                         f"({prior_identity(spec)}); pass that one or set the config's prior")
