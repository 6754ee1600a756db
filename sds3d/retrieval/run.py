"""Retrieval as an option of a run: retrieve assets for the prompt, adapt the prior on them, and
initialise the run's representations from them, before the generation loop starts.

`prepare_retrieval(config, library, k)` -> (initial representations or None, prior, record):
- the initial representations, one per particle (`sds3d.particle.particle_count`), each from one
  retrieved asset (`init=True`; None with `init=False`: the run starts as usual);
- the prior to score with: adapted on the retrieved assets (`adapt=True`, a LoRA merged into a copy;
  cached by asset set) or the given one (`adapt=False`; None: adapted only for ReDream,
  `adapts`);
- a JSON-ready record for metrics.json: the library, what was retrieved with its scores and yaw, the
  adaptation's cost (seconds, steps, whether it came from the cache) and each phase's seconds.

Any guidance variant can take these (SDS first); ReDream (`sds3d.guidance.redream`) is VSD that
requires the adapted prior and is given the initial particles.

Reference: "Retrieval-Augmented Score Distillation for Text-to-3D Generation", Seo et al. 2024,
arXiv:2402.02972.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sds3d.errors import InputError
from .adapt import AdaptationAsset, AdaptationConfig, adapt_prior


@dataclass
class RetrievalConfig:
    library: str = ""  # an asset library folder with its index (`sds3d library build`); "" = no retrieval
    k: int = 3  # assets retrieved (top K after re-ranking by images)
    candidates: int = 16  # N': caption matches re-ranked by images
    adapt: bool | None = None  # LoRA-adapt the prior on the retrieved assets; null: only for redream
    init: bool = True  # start from the retrieved assets (one per particle)
    optional: bool = False  # nothing close to the prompt in the library: run without retrieval, not fail
    cache_dir: str = ""  # where adapted LoRAs are kept ("" = ~/.cache/sds3d/adapted_priors)
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)


def adapts(adapt: bool | None, guidance: str) -> bool:
    """Whether a run adapts the prior: `adapt` when said, else only for guidance that scores with
    the adapted prior (`sds3d.guidance.registry.LIBRARY_GUIDANCE`: redream)."""
    from sds3d.guidance.registry import LIBRARY_GUIDANCE

    return adapt if adapt is not None else guidance in LIBRARY_GUIDANCE


def prepare_retrieval(config, library, k: int = 3, adapt: bool | None = None, init: bool = True, *,
                      settings: RetrievalConfig | None = None, prior=None, retrieved=None,
                      progress: bool = True):
    """(initial representations [n particles] or None, prior, record) for the run `config`
    (a GenerateConfig) from `library` (a folder with its index, or a loaded `LibraryIndex`).

    `settings` gives the rest (candidates, optional, cache_dir, adaptation; defaults otherwise);
    `prior` the prior to adapt (default: `config.prior`, loaded); `retrieved` skips the search with
    a list of `Retrieved` (for callers that searched already). InputError (one line) for a library
    with nothing close to the prompt (unless `settings.optional`: then nothing is retrieved, the
    record says why, and the run goes on without retrieval), and for ReDream without adaptation."""
    from sds3d.particle import particle_count
    from sds3d.guidance.registry import load_prior
    from sds3d.representations.registry import canonical_name, run_section

    from .init import initial_representations
    from .retrieve import retrieve

    settings = settings or RetrievalConfig()
    if config.guidance == "redream" and adapt is False:
        raise InputError("--guidance redream scores with the adapted prior: drop --no-adapt (or use --guidance vsd)")
    adapt = adapts(adapt, config.guidance)
    prior = prior if prior is not None else load_prior(config.prior, config.device)
    seconds = {}
    record = {"library": str(getattr(library, "folder", library)), "k": k, "adapt": adapt, "init": init}
    started = time.perf_counter()
    if retrieved is None:
        try:
            retrieved = retrieve(config.prompt, library, k=k, candidates=settings.candidates, prior=prior,
                                 seed=config.seed)
        except InputError as error:
            if not settings.optional or "nothing in the library is close" not in str(error):
                raise
            print(f"sds3d: {error}; running without retrieval (--retrieve-optional)", file=sys.stderr)
            return None, prior, {**record, "retrieved": [], "skipped": str(error)}
    seconds["retrieve"] = round(time.perf_counter() - started, 2)
    record["retrieved"] = [item.as_dict() for item in retrieved]
    if adapt:
        assets = [AdaptationAsset(Path(item.path), item.yaw_degrees, item.caption) for item in retrieved]
        prior, adaptation = adapt_prior(prior, assets, settings.adaptation, settings.cache_dir or None, progress)
        record["adaptation"] = {key: value for key, value in adaptation.items() if key != "assets"}
        seconds["adapt"] = adaptation["seconds"]
    initial = None
    if init:
        started = time.perf_counter()
        name = canonical_name(config.representation)
        generator = torch.Generator().manual_seed(config.seed)
        initial = initial_representations(retrieved, name, run_section(config), particle_count(config), generator)
        seconds["init"] = round(time.perf_counter() - started, 2)
    record["seconds"] = seconds
    return initial, prior, record


__all__ = ["RetrievalConfig", "adapts", "prepare_retrieval"]
