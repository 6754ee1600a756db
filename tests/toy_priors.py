"""Analytic priors for guidance tests: the exact denoiser of Gaussian data, in pixel space.

Data ~ N(mu, s0^2 I); the exact eps-prediction is eps = sigma (x_t - alpha mu) / (alpha^2 s0^2 + sigma^2).
A prompt's embedding carries its mean mu in `hidden[:, 0, 0]`, so cond/uncond differ as in CFG.
"""

from __future__ import annotations

import torch

from sds3d.guidance.prior import DiffusionPrior, TextEmbedding


def ddpm_alphas_cumprod(T: int = 1000) -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


class GaussianToyPrior(DiffusionPrior):
    def __init__(self, means: dict[str, float], s0: float = 0.5, resolution: int = 4, default_mean: float = 0.5):
        self.means = means  # prompt -> mu; other prompts get `default_mean`
        self.default_mean = default_mean
        self.s0 = s0
        self.resolution = resolution
        self.device = torch.device("cpu")
        self._abar = ddpm_alphas_cumprod()
        self.calls = 0

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self._abar

    def encode_prompts(self, prompts):
        return TextEmbedding(torch.tensor([self.means.get(p, self.default_mean) for p in prompts], dtype=torch.float32)[:, None, None])

    def encode_images(self, rgb):
        return rgb

    def decode_latents(self, y):
        return y

    @torch.no_grad()
    def predict_noise(self, x_t, t, text):
        self.calls += x_t.shape[0]
        mu = text.hidden[:, 0, 0].reshape(-1, *([1] * (x_t.ndim - 1)))
        alpha, sigma = self.alpha_sigma(t, x_t.ndim)
        return sigma * (x_t - alpha * mu) / (alpha**2 * self.s0**2 + sigma**2)
