"""Retrieval for a prompt: caption search, re-ranking by images of the prior, front alignment.

Following ReDream's retrieval: (1) the N' assets whose captions are nearest the prompt (cosine of
sentence embeddings of their shape phrases, colour words removed: `embedders.TextEmbedder`);
(2) re-ranked to the top K by image similarity to samples of the 2D prior for the prompt: with f_s
the evaluator features of the samples and g_v those of an asset's V indexed views,
image_score = mean_s max_v cos(f_s, g_v) (each sample matched to the asset's view it resembles
most); (3) each asset's front: the azimuth a* where the
evaluator's view head sees the most front, as the mean of its front probability over the view at a*
and its two neighbours (+-30 degrees) minus the same around a* + 180 (the front bin spans +-45
degrees, so a three-quarter view also reads as front; the window finds the arc's centre);
`yaw_degrees = -a*` turns the asset to face +x (`library.load_asset(path, yaw_degrees)`).
benchmarks/retrieval_front.py: over 30 variants of the 10 fronted micro-world kinds, each stored
turned by a random multiple of 30 degrees, 24 come out exact, 27 within one 30-degree view step,
and 3 wrong by 120-150 degrees (a snowman, a car, a television), 16 degrees off on average.

Re-ranking matters where captions are vague ("a red thing") and orders assets of one kind by
colour (the prior's samples have the prompt's colour); with exact captions the caption ranking alone
picks the kind: over the 56 prompts of benchmarks/retrieval_closeness.py, the top result had the
prompt's kind every time it kept a candidate, by captions and after re-ranking.

A library with nothing close to the prompt (best caption cosine below `MIN_TEXT_SCORE`) raises
InputError naming the best match and its score, unless `optional=True`, which returns [] so the
caller runs without retrieval.

Reference: Seo et al. 2024, "Retrieval-Augmented Score Distillation for Text-to-3D Generation"
(ReDream), arXiv:2402.02972.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sds3d.errors import InputError

from .index import LibraryIndex, search_captions

# Caption cosine (of shape phrases, `shape_phrase`) below which an asset is not "close" to a
# prompt, chosen on benchmarks/retrieval_closeness.py (a library of 2 variants per kind in random
# colours; 28 prompts "a <colour> <kind>" and 28 paraphrases such as "a 3d render of a teal-colored
# android"; fitted and reported on the same prompts). At 0.80 all 28 plain prompts keep a candidate
# of their kind (also when only other colours of it count), and all 56 prompts are told "nothing
# close" with their kind left out; 17 of 28 paraphrases keep one (the others use synonyms the text
# encoder does not equate: "box" for cube, "cup" for mug, "cottage" for house). At 0.78 "a black
# tree" takes a pine tree (0.79) when trees are left out; at 0.72, 20 paraphrases keep one.
MIN_TEXT_SCORE = 0.80
DEFAULT_CANDIDATES = 16  # N': caption candidates re-ranked by images
SAMPLES = 4  # prior samples per set (front view, any view)
SAMPLE_STEPS = 20  # DDIM steps per sample


@dataclass(frozen=True)
class Retrieved:
    """An asset retrieved for a prompt. `yaw_degrees`: the turn about +z that makes it face +x
    (pass it to `library.load_asset`); `text_score`, `image_score`: cosine similarities."""

    path: Path
    caption: str
    text_score: float
    image_score: float
    yaw_degrees: float
    tags: object = None

    def as_dict(self) -> dict:
        return {"path": str(self.path), "caption": self.caption, "text_score": round(self.text_score, 4),
                "image_score": round(self.image_score, 4), "yaw_degrees": self.yaw_degrees, "tags": self.tags}


@dataclass(frozen=True)
class PriorSamples:
    """Images of the prior for one prompt, [S, 3, 32, 32] in [0, 1]: `front` seen from the front,
    `any` from any view."""

    front: torch.Tensor
    any: torch.Tensor


def sample_prior(prompt: str, prior=None, n: int = SAMPLES, steps: int = SAMPLE_STEPS, seed: int = 0) -> PriorSamples:
    """`n` front-view and `n` any-view samples of the embedded prior (`prior`: an `EmbeddedPrior`,
    None = the shipped one). A text-only (v1) prior is told the view in words ("..., front view");
    a camera-conditioned (v2) one gets cameras: azimuth 0 for the front set, evenly spread azimuths
    for the other, at the indexed views' elevation, distance and field of view."""
    from sds3d.guidance.priors.embedded_prior import EmbeddedPrior, sample

    from .library import VIEW_ELEVATION, VIEW_FOVY, VIEW_RADIUS
    from sds3d.cameras import orbit_cameras
    from sds3d.world import strip_view_phrases

    prior = prior or EmbeddedPrior.load()
    plain = strip_view_phrases(prompt)
    common = dict(n=n, steps=steps, unet=prior.unet, scheduler=prior.scheduler, text_encoder=prior.text_encoder)
    if prior.camera_conditioned:
        front_cameras = orbit_cameras(VIEW_ELEVATION, torch.zeros(n), VIEW_RADIUS, VIEW_FOVY, 32)
        spread = (torch.arange(n, dtype=torch.float32) * 360.0 / n + 180.0) % 360.0 - 180.0
        any_cameras = orbit_cameras(VIEW_ELEVATION, spread, VIEW_RADIUS, VIEW_FOVY, 32)
        front = sample([plain], seed=seed, cameras=front_cameras, **common)
        other = sample([plain], seed=seed + 1, cameras=any_cameras, **common)
    else:
        front = sample([f"{plain}, front view"], seed=seed, **common)
        other = sample([plain], seed=seed + 1, **common)
    return PriorSamples(front=front, any=other)


def front_azimuth(front_probability: torch.Tensor, azimuths) -> float:
    """The front's azimuth (degrees, in (-180, 180]) from the view head's front probability [V] at
    V evenly spaced `azimuths` (see the module docstring)."""
    arc = torch.stack([front_probability.roll(shift) for shift in (-1, 0, 1)]).mean(0)  # [V]
    score = arc - arc.roll(len(arc) // 2)
    best = float(azimuths[int(score.argmax())]) % 360.0
    return best - 360.0 if best > 180.0 else best


def retrieve(prompt: str, library: str | Path | LibraryIndex, k: int = 3, candidates: int = DEFAULT_CANDIDATES,
             prior=None, samples: PriorSamples | None = None, min_text_score: float = MIN_TEXT_SCORE,
             optional: bool = False, seed: int = 0, method: str = "auto", text_embedder=None,
             image_embedder=None) -> list[Retrieved]:
    """The top `k` assets of `library` (a folder with a built index, or a loaded `LibraryIndex`) for
    `prompt`, best image score first (see the module docstring). `samples`: images of the prior
    for the prompt (default: `sample_prior(prompt, prior, seed=seed)`). InputError when no caption
    reaches `min_text_score` (unless `optional`: then [])."""
    from .embedders import ImageEmbedder, TextEmbedder

    if k < 1 or candidates < 1:
        raise InputError(f"retrieval needs k >= 1 and candidates >= 1, got k={k}, candidates={candidates}")
    text_embedder = text_embedder or TextEmbedder()
    image_embedder = image_embedder or ImageEmbedder()
    index = library if isinstance(library, LibraryIndex) else LibraryIndex.load(library, text_embedder.name,
                                                                                 image_embedder.name)
    query = text_embedder.embed([prompt])[0]
    hits = search_captions(index, query, max(k, candidates), method)
    close = [(row, score) for row, score in hits if score >= min_text_score]
    if not close:
        row, score = hits[0]
        message = (f"{index.folder}: nothing in the library is close to {prompt!r}: the best caption is "
                   f"{index.assets[row].caption!r} ({index.assets[row].file}) with similarity {score:.2f} < "
                   f"{min_text_score:.2f}")
        if optional:
            return []
        raise InputError(message + "; add such assets or run without retrieval")
    samples = samples if samples is not None else sample_prior(prompt, prior, seed=seed)
    any_features = image_embedder.embed(torch.cat([samples.front, samples.any]))  # [S, D]
    results = []
    for row, text_score in close:
        views = index.image_views[row]  # [V, D]
        image_score = float((any_features @ views.T).max(dim=1).values.mean())
        yaw = -front_azimuth(index.front_probability[row], index.azimuths)
        asset = index.assets[row]
        results.append(Retrieved(index.path(row), asset.caption, text_score, image_score, yaw + 0.0, asset.tags))
    results.sort(key=lambda r: (-r.image_score, -r.text_score, str(r.path)))
    return results[:k]


__all__ = ["MIN_TEXT_SCORE", "DEFAULT_CANDIDATES", "Retrieved", "PriorSamples", "sample_prior", "front_azimuth",
           "retrieve"]
