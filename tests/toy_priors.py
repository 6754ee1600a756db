"""Analytic priors for guidance tests: the exact denoiser of Gaussian data, in pixel space.

Data ~ N(mu, s0^2 I); the exact eps-prediction is eps = sigma (x_t - alpha mu) / (alpha^2 s0^2 + sigma^2).
A prompt's embedding carries its mean mu in `hidden[:, 0, 0]`, so cond/uncond differ as in CFG.
"""

from __future__ import annotations

import torch

from sds3d.guidance.priors.prior import DiffusionPrior, TextEmbedding
from sds3d.prompts import PromptBatch


def ddpm_alphas_cumprod(T: int = 1000) -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


def prompt_batch(prior: DiffusionPrior, n: int = 1, prompt: str = "obj", uncond: str = "") -> PromptBatch:
    """n views of `prompt` against `uncond`, as the generation loop hands them to a guidance (no view words)."""
    return PromptBatch(cond=prior.encode_prompts([prompt] * n), uncond=prior.encode_prompts([uncond] * n),
                       texts=[prompt] * n, views=["any"] * n)


class PixelSpaceToyPrior(DiffusionPrior):
    """What the toy priors share: pixel space (decoding is the identity), the DDPM schedule on the CPU,
    and `calls`, the UNet batch items evaluated so far."""

    def __init__(self, s0: float, resolution: int):
        self.s0 = s0
        self.resolution = resolution
        self.device = torch.device("cpu")
        self._abar = ddpm_alphas_cumprod()
        self.calls = 0

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self._abar

    def encode_images(self, rgb):
        return rgb

    def decode_latents(self, y):
        return y


class GaussianToyPrior(PixelSpaceToyPrior):
    def __init__(self, means: dict[str, float], s0: float = 0.5, resolution: int = 4, default_mean: float = 0.5):
        super().__init__(s0, resolution)
        self.means = means  # prompt -> mu; other prompts get `default_mean`
        self.default_mean = default_mean

    def encode_prompts(self, prompts):
        return TextEmbedding(torch.tensor([self.means.get(p, self.default_mean) for p in prompts], dtype=torch.float32)[:, None, None])

    @torch.no_grad()
    def predict_noise(self, x_t, t, text):
        self.calls += x_t.shape[0]
        mu = text.hidden[:, 0, 0].reshape(-1, *([1] * (x_t.ndim - 1)))
        alpha, sigma = self.alpha_sigma(t, x_t.ndim)
        return sigma * (x_t - alpha * mu) / (alpha**2 * self.s0**2 + sigma**2)


class GaussianMixtureToyPrior(PixelSpaceToyPrior):
    """Exact denoiser of a two-component Gaussian mixture, independently at every pixel, in channel space:
    y[:, :, i, j] ~ pi N(mode_a, s0^2 I_C) + (1 - pi) N(mode_b, s0^2 I_C), C = len(mode_a).

    With v = alpha^2 s0^2 + sigma^2 and d_k = x_t - alpha m_k, the posterior responsibilities are
    r_k ∝ pi_k exp(-|d_k|^2 / (2 v)) and the exact eps-prediction is eps = sigma sum_k r_k d_k / v.
    A prompt's embedding carries pi (the weight of mode_a) in `hidden[:, 0, 0]`. `encode_images` keeps
    the first C channels of the render (a 2-D playground: C = 2, resolution 1).
    """

    def __init__(self, mode_a, mode_b, s0: float = 0.1, weights: dict[str, float] | None = None,
                 default_weight: float = 0.5, resolution: int = 1):
        super().__init__(s0, resolution)
        self.modes = torch.stack([torch.as_tensor(m, dtype=torch.float32) for m in (mode_a, mode_b)])
        self.channels = self.modes.shape[1]
        self.weights = weights or {}
        self.default_weight = default_weight

    def encode_prompts(self, prompts):
        pi = [self.weights.get(p, self.default_weight) for p in prompts]
        return TextEmbedding(torch.tensor(pi, dtype=torch.float32)[:, None, None])

    def encode_images(self, rgb):
        return rgb[:, : self.channels]

    @torch.no_grad()
    def predict_noise(self, x_t, t, text):
        self.calls += x_t.shape[0]
        pi = text.hidden[:, 0, 0].clamp(1e-6, 1 - 1e-6).reshape(-1, 1, 1, 1)
        alpha, sigma = self.alpha_sigma(t, x_t.ndim)
        var = alpha**2 * self.s0**2 + sigma**2
        d = [x_t - alpha * m.reshape(1, -1, 1, 1) for m in self.modes]
        logit_a = (pi.log() - (d[0] ** 2).sum(1, keepdim=True) / (2 * var)
                   - (1 - pi).log() + (d[1] ** 2).sum(1, keepdim=True) / (2 * var))
        r_a = torch.sigmoid(logit_a)  # the two-way softmax
        return sigma * (r_a * d[0] + (1 - r_a) * d[1]) / var
