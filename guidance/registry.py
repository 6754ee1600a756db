"""Guidance variants and priors by name, for the CLI, the library and the benchmarks."""

from __future__ import annotations

from pathlib import Path

import torch

from importlib import import_module

from .priors.prior import DiffusionPrior, resolve_device
from .priors.prior_type import is_local, prior_type

# name -> (module, class); each variant's config is the section of the same name in GenerateConfig
GUIDANCE = {
    "sds": ("sds", "SDS"), "nfsd": ("nfsd", "NFSD"), "csd": ("csd", "CSD"), "sdi": ("sdi", "SDI"),
    "ism": ("ism", "ISM"), "tsm": ("tsm", "TSM"), "cds": ("cds", "CDS"), "dsd": ("dsd", "DSD"),
    "vsd": ("vsd", "VSD"), "cfd": ("cfd", "CFD"),
    "redream": ("redream", "ReDream"),
}


def build_guidance(name: str, prior: DiffusionPrior, config, total_steps: int):
    """`config` is the variant's own config dataclass (e.g. SDSConfig)."""
    if name not in GUIDANCE:
        raise ValueError(f"unknown guidance {name!r}; choose one of {', '.join(sorted(GUIDANCE))}")
    module, cls = GUIDANCE[name]
    return getattr(import_module(f"{__package__}.{module}"), cls)(prior, config, total_steps=total_steps)


def load_prior(spec: str, device: str | torch.device = "cpu") -> DiffusionPrior:
    """"embedded" -> the shipped micro-world prior; a folder or hub id -> the prior it holds, told
    apart by `prior_type` (an embedded-prior export, Stable Diffusion or DeepFloyd IF stage I)."""
    device = resolve_device(device)
    kind = prior_type(spec)
    source = str(Path(spec).expanduser()) if is_local(spec) else spec
    if kind == "embedded":
        from .priors.embedded_prior import EmbeddedPrior

        return EmbeddedPrior.load(None if spec == "embedded" else source, device=device)
    if kind == "if":
        from .priors.deepfloyd_if import DeepFloydIFPrior

        return DeepFloydIFPrior.from_pretrained(source, device=device)
    from .priors.stable_diffusion import StableDiffusionPrior

    return StableDiffusionPrior.from_pretrained(source, device=device)
