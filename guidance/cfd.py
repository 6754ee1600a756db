"""Consistent Flow Distillation (Yan et al. 2025).

g = w(t) (eps_hat^s(x_t, t) - eps),  x_t = alpha_t y + sigma_t eps,  w = sigma_t / alpha_t,
eps = sqrt_beta eps_3D + sqrt(1 - sqrt_beta^2) eps_rand.

eps_3D is 3D-consistent noise computed from the render's depth and alpha and the cameras
(`consistent_noise.ConsistentNoise`, our rasteriser-free version of CFD's triplane noise texture),
at the prior's resolution (latents for SD, pixels for a pixel prior). With sqrt_beta = 0 this is SDS
with w = sigma/alpha. The timestep is deterministic and decreasing: t% = t_max - (t_max - t_min) p,
p piecewise linear through `anneal_progress` at `anneal_fractions` of the run (the paper's
(0, 0.3, 0.6, 0.8) at steps (0, 2.5k, 12.5k, 25k) of a 25k-step run). After every call the noise
state gets the SDE refresh N <- sqrt(1 - gamma) N + sqrt(gamma) xi, gamma following
`refresh_gamma` = (start fraction, gamma_start, gamma_end, end fraction) of the run (the paper's
0.01 -> 1e-4 over steps 5k-10k of 25k). CFG uses the diffusers convention: the paper's s = 70
(threestudio) is 71 here; the long negative prompt belongs in the PromptBatch's uncond.

Reference: "Consistent Flow Distillation for Text-to-3D Generation", Yan, Chen, Wang, 2025,
arXiv:2501.05445.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .base import Guidance, GuidanceOutput, clip_gradient, images_from_render, target_trick_loss
from .consistent_noise import ConsistentNoise, ConsistentNoiseConfig
from .priors.prior import DiffusionPrior, guided_noise
from .schedules import Scheduled, scheduled_value


def piecewise_linear(x: float, xs: tuple[float, ...], ys: tuple[float, ...]) -> float:
    """Linear interpolation through (xs, ys) (xs increasing), constant outside."""
    if x <= xs[0]:
        return float(ys[0])
    for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:]):
        if x <= x1:
            return float(y0 + (y1 - y0) * (x - x0) / (x1 - x0)) if x1 > x0 else float(y1)
    return float(ys[-1])


@dataclass
class CFDConfig:
    guidance_scale: Scheduled = 71.0  # diffusers convention (threestudio's 70)
    max_step_percent: float = 0.98
    min_step_percent: float = 0.02
    anneal_fractions: tuple[float, ...] = (0.0, 0.1, 0.5, 1.0)  # of total_steps
    anneal_progress: tuple[float, ...] = (0.0, 0.3, 0.6, 0.8)  # p at those fractions
    sqrt_beta: float = 1.0  # weight of the 3D-consistent noise
    refresh_gamma: tuple[float, float, float, float] = (0.2, 0.01, 1e-4, 0.4)  # (from, gamma0, gamma1, to)
    grad_clip: Scheduled | None = None
    noise: ConsistentNoiseConfig = field(default_factory=ConsistentNoiseConfig)


class CFD(Guidance):
    name = "cfd"

    def __init__(self, prior: DiffusionPrior, config: CFDConfig | None = None, total_steps: int = 1000):
        super().__init__(prior, total_steps)
        self.config = config or CFDConfig()
        if not 0.0 <= self.config.sqrt_beta <= 1.0:
            raise ValueError(f"sqrt_beta must lie in [0, 1], got {self.config.sqrt_beta}")
        self.noise = ConsistentNoise(self.config.noise)

    def unet_evals_per_step(self) -> int:
        return 2

    def timestep(self, step: int) -> int:
        """The deterministic integer timestep of this optimisation step."""
        c = self.config
        progress = piecewise_linear(step / max(self.total_steps, 1), c.anneal_fractions, c.anneal_progress)
        percent = c.max_step_percent - (c.max_step_percent - c.min_step_percent) * progress
        return min(max(int(percent * self.prior.num_train_timesteps), 0), self.prior.num_train_timesteps - 1)

    def refresh_gamma(self, step: int) -> float:
        start, gamma0, gamma1, end = self.config.refresh_gamma
        return scheduled_value([start * self.total_steps, gamma0, gamma1, end * self.total_steps], step)

    def sample_noise(self, render, cameras, shape: torch.Size,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """eps [B, c, h, w] = sqrt_beta eps_3D + sqrt(1 - sqrt_beta^2) eps_rand for latents of `shape`."""
        sqrt_beta = self.config.sqrt_beta
        device = render.rgb.device
        noise = torch.zeros(shape, device=device)
        if sqrt_beta < 1:
            noise = math.sqrt(1 - sqrt_beta**2) * torch.randn(shape, generator=generator).to(device)
        if sqrt_beta > 0:
            if cameras is None or render.depth is None or render.alpha is None:
                raise ValueError("CFD's 3D-consistent noise needs the render's depth and alpha and its cameras")
            consistent = self.noise(render.depth, render.alpha, cameras, tuple(shape[-2:]), shape[1], generator)
            noise = sqrt_beta * consistent.to(device) + noise
        return noise

    def gradient(self, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, cond, uncond, step: int) -> torch.Tensor:
        """g [B, c, h, w] for latents y (not differentiated), timesteps t [B] and noise eps."""
        x_t = self.prior.add_noise(y.detach(), noise, t)
        scale = scheduled_value(self.config.guidance_scale, step)
        eps_hat, _, _ = guided_noise(self.prior, x_t, t, cond, uncond, scale)
        alpha, sigma = self.prior.alpha_sigma(t, y.ndim)
        grad = sigma / alpha * (eps_hat - noise)
        clip = None if self.config.grad_clip is None else scheduled_value(self.config.grad_clip, step)
        return clip_gradient(grad, clip)

    def __call__(self, render, prompts, cameras, step: int, generator: torch.Generator | None = None) -> GuidanceOutput:
        y = self.prior.encode_images(images_from_render(render.rgb))
        t = torch.full((y.shape[0],), self.timestep(step), dtype=torch.long, device=y.device)
        noise = self.sample_noise(render, cameras, y.shape, generator).to(y.device, y.dtype)
        grad = self.gradient(y, t, noise, prompts.cond, prompts.uncond, step)
        loss = target_trick_loss(y, grad)
        gamma = self.refresh_gamma(step)
        self.noise.refresh(gamma, generator)
        return GuidanceOutput(loss=loss, logs={"t": float(t[0]), "grad_norm": grad.norm().item(), "gamma": gamma})

    def state_dict(self) -> dict:
        return {"noise": self.noise.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.noise.load_state_dict(state["noise"])
