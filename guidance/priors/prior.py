"""The one interface every guidance variant uses to talk to a 2D diffusion prior.

A prior works in its own image space `y` ("latents": VAE latents for Stable Diffusion, pixels in
[-1, 1] for the embedded prior) with a DDPM schedule: x_t = alpha_t * y + sigma_t * eps, where
alpha_t = sqrt(alphas_cumprod[t]) and sigma_t = sqrt(1 - alphas_cumprod[t]).

Classifier-free guidance uses the diffusers convention, eps_uncond + s * (eps_cond - eps_uncond)
(s = 1: purely conditional). threestudio's scale s_ts corresponds to s = s_ts + 1 here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' or None -> cuda if available, else cpu; a CUDA device on a machine without CUDA is a
    one-line ValueError."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available on this machine")
    return device


@dataclass
class TextEmbedding:
    """The conditioning of a prior call: encoded prompts, hidden states [B, L, C], an optional
    attention mask [B, L], and for camera-conditioned priors the cameras' features [B, D]
    (`sds3d.cameras.cameras_features`). Classifier-free guidance drops the text, and the camera too
    where the prior knows "no camera" (`DiffusionPrior.unconditional_camera`)."""

    hidden: torch.Tensor
    mask: torch.Tensor | None = None
    camera: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def __getitem__(self, index) -> "TextEmbedding":
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return TextEmbedding(self.hidden[index], pick(self.mask), pick(self.camera))

    @staticmethod
    def cat(embeddings: list["TextEmbedding"]) -> "TextEmbedding":
        def joined(name: str):
            parts = [getattr(e, name) for e in embeddings]
            if all(p is None for p in parts):
                return None
            if any(p is None for p in parts):
                if name == "camera":
                    raise ValueError("cannot batch embeddings with and without cameras")
                return None
            return torch.cat(parts)

        return TextEmbedding(torch.cat([e.hidden for e in embeddings]), joined("mask"), joined("camera"))

    def to(self, device) -> "TextEmbedding":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return TextEmbedding(self.hidden.to(device), move(self.mask), move(self.camera))

    def with_camera(self, camera: torch.Tensor | None) -> "TextEmbedding":
        """The same text for the views whose camera features are `camera` [B, D] (a single text is
        repeated B times); None returns the text unchanged."""
        if camera is None:
            return self
        text = self if len(self) == len(camera) else expand_embedding(self, len(camera))
        return TextEmbedding(text.hidden, text.mask, camera)


def expand_embedding(text: TextEmbedding, batch: int) -> TextEmbedding:
    """One embedding -> `batch` copies (a batch of the right size is returned unchanged)."""
    if len(text) == batch:
        return text
    if len(text) != 1:
        raise ValueError(f"cannot expand {len(text)} text embeddings to a batch of {batch}")
    grow = lambda t: None if t is None else t.expand(batch, *t.shape[1:])  # noqa: E731
    return TextEmbedding(grow(text.hidden), grow(text.mask), grow(text.camera))


class DiffusionPrior(ABC):
    """A frozen text-to-image diffusion model seen through the few calls score distillation needs."""

    resolution: int  # renders are resized to this before `encode_images`
    device: torch.device
    # DDIM steps (`guidance.ddim.ddim_step`) clip predicted x0 to [-r, r] as the prior's own sampler
    # does (diffusers `clip_sample`); None: no clipping (latent priors such as Stable Diffusion).
    clip_sample_range: float | None = None
    # True for priors conditioned on the camera (embedded prior v2): every call's TextEmbedding then
    # carries camera features and prompts carry no view words; False: view words only.
    camera_conditioned: bool = False
    # True for camera-conditioned priors that also know "no camera" (all-zero features, learnt by
    # camera dropout): their unconditional branch drops the camera with the text.
    null_camera: bool = False
    # What `sds3d.guidance.registry.load_prior` loaded it from (`prior_identity`); None when built otherwise.
    loaded_from: str | None = None

    def unconditional_camera(self, camera: torch.Tensor | None) -> torch.Tensor | None:
        """The camera features [B, D] of the unconditional branch for views at `camera` [B, D]."""
        return torch.zeros_like(camera) if camera is not None and self.null_camera else camera

    @property
    @abstractmethod
    def alphas_cumprod(self) -> torch.Tensor:
        """[T] cumulative products of the DDPM schedule (float32, on `device`)."""

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    @abstractmethod
    def encode_prompts(self, prompts: list[str]) -> TextEmbedding:
        """Prompts -> embeddings, cached per prompt; "" is the unconditional prompt."""

    @abstractmethod
    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """Differentiable: rgb [B, 3, H, W] in [0, 1] (any H, W) -> y [B, c, h, w] in the prior's space."""

    @abstractmethod
    def decode_latents(self, y: torch.Tensor) -> torch.Tensor:
        """y -> rgb [B, 3, H, W] in [0, 1] (for previews and image-space losses)."""

    @abstractmethod
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        """eps-prediction [B, c, h, w] for noisy x_t at integer timesteps t [B] (v-prediction models
        are converted: eps = alpha_t * v + sigma_t * x_t). No gradient."""

    def add_noise(self, y: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = alpha_t y + sigma_t noise (differentiable in y)."""
        alpha, sigma = self.alpha_sigma(t, y.ndim)
        return alpha * y + sigma * noise

    def alpha_sigma(self, t: torch.Tensor, ndim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t) shaped [B, 1, 1, 1] for broadcasting."""
        abar = self.alphas_cumprod.to(self.device)[t.to(self.device)].reshape(-1, *([1] * (ndim - 1)))
        return abar.sqrt(), (1 - abar).sqrt()


def cfg_combine(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Diffusers-convention classifier-free guidance: eps_u + s (eps_c - eps_u)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def threestudio_scale_to_diffusers(scale_ts: float) -> float:
    """threestudio computes eps_c + s (eps_c - eps_u), which is the diffusers form with s + 1."""
    return scale_ts + 1.0


@torch.no_grad()
def guided_noise(prior: DiffusionPrior, x_t: torch.Tensor, t: torch.Tensor, cond: TextEmbedding,
                 uncond: TextEmbedding, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batched UNet call on [x_t; x_t] -> (guided eps, eps_cond, eps_uncond), each [B, ...]."""
    eps = prior.predict_noise(torch.cat([x_t, x_t]), torch.cat([t, t]), TextEmbedding.cat([cond, uncond]))
    eps_cond, eps_uncond = eps.chunk(2)
    return cfg_combine(eps_cond, eps_uncond, scale), eps_cond, eps_uncond
