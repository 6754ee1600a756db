"""Perp-Neg classifier-free guidance (Armandpour et al. 2023, "Re-imagine the Negative Prompt
Algorithm"), as threestudio implements it for view-dependent prompts.

Source (transcribed): threestudio `threestudio/utils/ops.py` (`perpendicular_component`,
`shifted_expotional_decay`), `threestudio/models/prompt_processors/base.py`
(`get_text_embeddings_perp_neg`, defaults `perp_neg_f_*`) and the perp-neg branch of
`threestudio/models/guidance/stable_diffusion_guidance.py`:

    e_pos = eps(x; pos) - eps(x; uncond),   e_k = eps(x; neg_k) - eps(x; uncond)
    eps   = eps(x; uncond) + s * (e_pos + sum_k w_k * perp(e_k, e_pos))
    perp(x, y) = x - <x, y> / max(<y, y>, 1e-6) * y

The projection is per sample: the inner products run over each sample's whole (C, H, W) tensor, so
the combined negative term sum_k w_k perp(e_k, e_pos) is orthogonal to e_pos sample by sample.
Note that threestudio's perp-neg branch combines in the diffusers form with the configured number s,
while its plain branch uses the threestudio form (s_ts = s - 1); here `scale` is always diffusers.

Per-view positive prompt and weights (azimuth a in degrees, shifted to [-180, 180)):
- overhead view: positive = "<p>, overhead view", both negatives weighted 0 (dummies);
- |a| < 90: r = 1 - |a| / 90 (1 = front, 0 = side); positive = r front + (1 - r) side (embeddings
  interpolated); negatives [front, side] with weights [-f_fs(r), -f_sf(1 - r)];
- otherwise: r = 2 - |a| / 90 (1 = side, 0 = back); positive = r side + (1 - r) back; negatives
  [side, front] with weights [-f_sb(r), -f_fsb(r)];
with f(r) = a exp(-b r) + c and (a, b, c): f_fs = f_sf = (4, 0.5, -2.426), f_sb = (1, 0.5, -0.606),
f_fsb = (1, 0.5, 0.967). Cost: 2 + K = 4 UNet items per guided evaluation instead of 2.

Reference: "Re-imagine the Negative Prompt Algorithm: Transform 2D Diffusion into 3D, alleviate Janus
problem and Beyond", Armandpour, Sadeghian, Zheng, Sadeghian, Zhou, 2023, arXiv:2304.04968.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .priors.prior import DiffusionPrior, TextEmbedding, guided_noise

PERP_NEG_F_SB = (1.0, 0.5, -0.606)
PERP_NEG_F_FSB = (1.0, 0.5, 0.967)
PERP_NEG_F_FS = (4.0, 0.5, -2.426)  # f_fs(1) = 0
PERP_NEG_F_SF = (4.0, 0.5, -2.426)
VIEW_ORDER = ("front", "side", "back", "overhead")


def shifted_exponential_decay(a: float, b: float, c: float, r: float) -> float:
    return a * math.exp(-b * r) + c


def perpendicular_component(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The part of each sample x[i] orthogonal to y[i] (inner products over all non-batch dims)."""
    dims = list(range(1, x.ndim))
    dot = (x * y).sum(dim=dims, keepdim=True)
    norm2 = (y * y).sum(dim=dims, keepdim=True).clamp_min(1e-6)
    return x - dot / norm2 * y


def perp_neg_combine(eps_pos: torch.Tensor, eps_uncond: torch.Tensor, eps_negs: list[torch.Tensor] | tuple,
                     weights: torch.Tensor, scale: float) -> torch.Tensor:
    """eps_u + s (e_pos + sum_k w[:, k] perp(eps_neg_k - eps_u, e_pos)); weights [B, K]."""
    e_pos = eps_pos - eps_uncond
    return eps_uncond + scale * (e_pos + perp_neg_term(e_pos, eps_uncond, eps_negs, weights))


def perp_neg_term(e_pos: torch.Tensor, eps_uncond: torch.Tensor, eps_negs, weights: torch.Tensor) -> torch.Tensor:
    """sum_k w_k perp(e_k, e_pos): the combined negative direction (orthogonal to e_pos per sample)."""
    total = torch.zeros_like(e_pos)
    shape = (-1, *([1] * (e_pos.ndim - 1)))
    for k, eps_neg in enumerate(eps_negs):
        w = weights[:, k].to(e_pos).reshape(shape)
        total = total + w * perpendicular_component(eps_neg - eps_uncond, e_pos)
    return total


def view_weights(view: str, azimuth_deg: float) -> tuple[tuple[str, str, float], tuple[str, str], tuple[float, float]]:
    """One view -> ((view_a, view_b, r) for the positive r a + (1 - r) b, negative views, weights)."""
    azimuth = (azimuth_deg + 180.0) % 360.0 - 180.0
    if view == "overhead":
        return ("overhead", "overhead", 1.0), ("overhead", "overhead"), (0.0, 0.0)
    if abs(azimuth) < 90:
        r = 1 - abs(azimuth) / 90
        return (("front", "side", r), ("front", "side"),
                (-shifted_exponential_decay(*PERP_NEG_F_FS, r), -shifted_exponential_decay(*PERP_NEG_F_SF, 1 - r)))
    r = 2.0 - abs(azimuth) / 90
    return (("side", "back", r), ("side", "front"),
            (-shifted_exponential_decay(*PERP_NEG_F_SB, r), -shifted_exponential_decay(*PERP_NEG_F_FSB, r)))


@dataclass
class PerpNegPrompts:
    positive: TextEmbedding  # [B] interpolated view prompts
    negatives: list[TextEmbedding]  # K x [B]
    weights: torch.Tensor  # [B, K]

    def __getitem__(self, index) -> "PerpNegPrompts":
        return PerpNegPrompts(self.positive[index], [n[index] for n in self.negatives], self.weights[index])


def _mix(a: TextEmbedding, b: TextEmbedding, r: float) -> TextEmbedding:
    mask = None if a.mask is None or b.mask is None else torch.maximum(a.mask, b.mask)
    return TextEmbedding(r * a.hidden + (1 - r) * b.hidden, mask)


def perp_neg_prompts(prior: DiffusionPrior, prompts, cameras) -> PerpNegPrompts:
    """Perp-Neg embeddings for a `PromptBatch` made by `sds3d.prompts.PromptProcessor` with
    view-dependent prompts ("<prompt>, <view> view") and cameras with azimuths. None for a
    camera-conditioned prior: it is told each view's camera, which Perp-Neg's view words stand in for."""
    from sds3d.views import VIEW_WORDS

    if prior.camera_conditioned:
        return None

    if cameras is None or cameras.azimuth is None:
        raise ValueError("Perp-Neg needs cameras with azimuths (orbit cameras)")
    bases = []
    for text, view in zip(prompts.texts, prompts.views):
        suffix = f", {VIEW_WORDS[view]}" if view in VIEW_WORDS else None
        if suffix is None or not text.endswith(suffix):
            raise ValueError("Perp-Neg only works with view-dependent prompts ('<prompt>, <view> view')")
        bases.append(text[: -len(suffix)])
    distinct = list(dict.fromkeys(bases))
    encoded = prior.encode_prompts([f"{b}, {VIEW_WORDS[v]}" for b in distinct for v in VIEW_ORDER])
    table = {(b, v): encoded[[i * len(VIEW_ORDER) + j]] for i, b in enumerate(distinct) for j, v in enumerate(VIEW_ORDER)}
    positives, negatives, weights = [], [[], []], []
    for base, view, azimuth in zip(bases, prompts.views, cameras.azimuth.reshape(-1).tolist()):
        (view_a, view_b, r), (neg_a, neg_b), w = view_weights(view, azimuth)
        positives.append(_mix(table[(base, view_a)], table[(base, view_b)], r))
        negatives[0].append(table[(base, neg_a)])
        negatives[1].append(table[(base, neg_b)])
        weights.append(w)
    return PerpNegPrompts(TextEmbedding.cat(positives), [TextEmbedding.cat(n) for n in negatives],
                          torch.tensor(weights, dtype=torch.float32, device=prior.device))


@torch.no_grad()
def guided_noise_perp_neg(prior: DiffusionPrior, x_t: torch.Tensor, t: torch.Tensor, perp: PerpNegPrompts,
                          uncond: TextEmbedding, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batched UNet call on (2 + K) copies of x_t -> (Perp-Neg guided eps, eps_pos, eps_uncond)."""
    n = 2 + len(perp.negatives)
    eps = prior.predict_noise(torch.cat([x_t] * n), torch.cat([t] * n),
                              TextEmbedding.cat([perp.positive, uncond, *perp.negatives]))
    chunks = eps.chunk(n)
    return perp_neg_combine(chunks[0], chunks[1], chunks[2:], perp.weights, scale), chunks[0], chunks[1]


def guided_eps(prior: DiffusionPrior, x_t: torch.Tensor, t: torch.Tensor, cond: TextEmbedding,
               uncond: TextEmbedding, scale: float, perp: PerpNegPrompts | None = None) -> torch.Tensor:
    """Guided eps for SDS-style variants: plain CFG (2 items) or Perp-Neg (4 items) when `perp` is given."""
    if perp is None:
        return guided_noise(prior, x_t, t, cond, uncond, scale)[0]
    return guided_noise_perp_neg(prior, x_t, t, perp, uncond, scale)[0]
