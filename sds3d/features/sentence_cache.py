"""Sentence embeddings kept on disk: a phrase list embedded once is read back without the text encoder.

Importing transformers and loading all-MiniLM-L6-v2 take most of a `sds3d select` (a DMTet car on a
2-core AMD EPYC: 10.9 s, then 3.8 s with its phrases cached), though the phrases are usually the same
from call to call: the part teacher's vocabulary and the user's query. Each call's phrase list is one entry,
`<cache>/sentence_embeddings/<key>.pt` (`sds3d.cache`), keyed by the list and by the encoder's files
(their names and sizes, and config.json), so an entry is the very tensor the encoder gave for that
batch. An unreadable or mismatched entry is computed again; a cache that cannot be written is skipped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
from pathlib import Path
from typing import Callable

import torch


@functools.lru_cache(maxsize=None)
def encoder_fingerprint() -> str:
    """sha256 of the shipped all-MiniLM-L6-v2 folder's file names and sizes and its config.json."""
    from sds3d.guidance.priors.text_encoder import minilm_path

    folder = minilm_path()
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(folder)}:{path.stat().st_size}\n".encode())
    digest.update((folder / "config.json").read_bytes())
    return digest.hexdigest()


def cache_path(phrases: list[str]) -> Path:
    """Where the embeddings of exactly this phrase list are kept."""
    from sds3d.cache import cache_dir

    key = hashlib.sha256(json.dumps([encoder_fingerprint(), list(phrases)]).encode()).hexdigest()[:32]
    return cache_dir("sentence_embeddings") / f"{key}.pt"


def cached_embeddings(phrases: list[str], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """[N, D] embeddings of `phrases`: read from the cache, else `compute()` and kept there."""
    from sds3d.atomic import atomic_torch_save

    path = cache_path(phrases)
    try:
        stored = torch.load(path, weights_only=True)
        if stored.get("phrases") == list(phrases) and stored["embeddings"].shape[0] == len(phrases):
            return stored["embeddings"]
    except (OSError, RuntimeError, ValueError, EOFError, KeyError, AttributeError, pickle.UnpicklingError):
        pass
    embeddings = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"phrases": list(phrases), "embeddings": embeddings}, path)
    except OSError:  # a read-only home: embed again next time
        pass
    return embeddings


__all__ = ["cache_path", "cached_embeddings", "encoder_fingerprint"]
