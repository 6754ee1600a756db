"""Shared DDIM helpers for the inversion / ODE-based variants (ISM, TSM, SDI, DSD, CDS).

Everything is in the prior's DDPM parameterisation (eps-prediction): x_t = sqrt(abar_t) y +
sqrt(1 - abar_t) eps with abar = `prior.alphas_cumprod`.

- `ddim_step(x, eps, abar_from, abar_to)`: the deterministic (eta = 0) DDIM update
  x_to = sqrt(abar_to) x0_hat + sqrt(1 - abar_to) eps, x0_hat = (x - sqrt(1 - abar_from) eps) / sqrt(abar_from).
  The same formula denoises (abar_to > abar_from) and inverts (abar_to < abar_from), as
  diffusers' DDIMScheduler.step and DDIMInverseScheduler.step do, including their `clip_sample`
  (x0_hat clipped to [-r, r], r = `prior.clip_sample_range`). Pixel-space priors need it: without
  it, 10-50-step DDIM with the embedded prior gives no recognisable object
  (docs/notes/2026-12-04-ddim-clip.md#the-ddim-steps-did-not-clip-x0).
- `prior_ddim_step(prior, x, eps, t_from, t_to)`: the same between a prior's integer timesteps, with its clip.
- `ddim_variance(abar_t, abar_prev)`: DDIM's sigma_t^2 / eta^2 (diffusers `_get_variance`).
- batch helpers: `expand_text`, `timestep_groups`, `prior_latent_shape`.

Reference: "Denoising Diffusion Implicit Models", Song, Meng, Ermon, 2020, arXiv:2010.02502.
"""

from __future__ import annotations

import torch

from .priors.prior import DiffusionPrior, TextEmbedding, expand_embedding


def abar(prior: DiffusionPrior, t, like: torch.Tensor) -> torch.Tensor:
    """alphas_cumprod at integer timestep(s) t, shaped [B, 1, ...] (or [1, 1, ...]) to broadcast with `like`."""
    t = torch.as_tensor(t, device=prior.device).long().reshape(-1)
    value = prior.alphas_cumprod.to(prior.device)[t]
    return value.reshape(-1, *([1] * (like.ndim - 1))).to(like.device, like.dtype)


def predicted_x0(x: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    return (x - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()


def ddim_step(x: torch.Tensor, eps: torch.Tensor, abar_from: torch.Tensor, abar_to: torch.Tensor,
              clip_range: float | None = None) -> torch.Tensor:
    """Deterministic DDIM move of x from noise level abar_from to abar_to using the eps prediction;
    with `clip_range` r the predicted x0 is clipped to [-r, r] first (eps is kept), as diffusers'
    DDIMScheduler / DDIMInverseScheduler do with `clip_sample` (pass `prior.clip_sample_range`)."""
    x0 = predicted_x0(x, eps, abar_from)
    if clip_range is not None:
        x0 = x0.clamp(-clip_range, clip_range)
    return abar_to.sqrt() * x0 + (1 - abar_to).sqrt() * eps


def prior_ddim_step(prior: DiffusionPrior, x: torch.Tensor, eps: torch.Tensor, t_from, t_to) -> torch.Tensor:
    """`ddim_step` between integer timesteps of `prior`, with the prior's x0 clip."""
    return ddim_step(x, eps, abar(prior, t_from, x), abar(prior, t_to, x), prior.clip_sample_range)


def ddim_variance(abar_t: torch.Tensor, abar_prev: torch.Tensor) -> torch.Tensor:
    """(1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev): DDIM's sigma^2 at eta = 1 for the
    step t -> prev (diffusers DDIMScheduler._get_variance(t, prev))."""
    return (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)


def expand_text(text: TextEmbedding, batch: int, camera: torch.Tensor | None = None) -> TextEmbedding:
    """One embedding [1, L, C] -> [batch, L, C] (a batch of the right size is returned unchanged),
    for the views whose camera features are `camera` [batch, D] when the prior wants them."""
    return expand_embedding(text, batch).with_camera(camera)


def timestep_groups(t: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """[B] integer timesteps -> [(value, indices of the items with that value)], in first-seen order.
    Inversions and ODE paths walk a timestep grid that depends on t, so they run once per value."""
    groups: dict[int, list[int]] = {}
    for i, value in enumerate(t.reshape(-1).tolist()):
        groups.setdefault(int(value), []).append(i)
    return [(value, torch.tensor(idx, dtype=torch.long)) for value, idx in groups.items()]


@torch.no_grad()
def prior_latent_shape(prior: DiffusionPrior) -> tuple[int, ...]:
    """(c, h, w) of the prior's image space, found by encoding one blank render at `prior.resolution`
    (used to size fixed noise buffers at construction time)."""
    size = int(prior.resolution)
    blank = torch.zeros(1, 3, size, size, device=prior.device)
    return tuple(prior.encode_images(blank).shape[1:])
