"""What every editing score shares: the call signature, the noised pair of renders and the registry.

An editing score moves a rendered view y towards a target prompt while keeping what it shares with
a source: the source render y_src (for 3D editing, the original asset rendered from the same
cameras) and the source prompt. `score(render, source, target, source_prompts, step, generator)`
encodes both renders with the prior, draws t and the noise shared by both branches, computes the
per-pixel gradient g [B, c, h, w] with `gradient(...)` and returns it through the target trick
(dL/dy = g / B), like the generation variants in `sds3d.guidance`.

Prompts come as `PromptBatch`es (one per view; a camera-conditioned prior's embeddings carry the
views' cameras); classifier-free guidance uses the diffusers convention eps_u + s (eps_c - eps_u).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import import_module

import torch

from sds3d.guidance.base import GuidanceOutput, clip_gradient, images_from_render, target_trick_loss
from sds3d.guidance.priors.prior import DiffusionPrior, TextEmbedding, cfg_combine
from sds3d.guidance.schedules import Scheduled, TimestepConfig, TimestepSchedule, scheduled_value

# name -> (module in this package, score class, config class)
EDIT_SCORES = {
    "pds": ("pds", "PDS", "PDSConfig"),
    "dds": ("dds", "DDS", "DDSConfig"),
    "ssd": ("ssd", "SSD", "SSDConfig"),
    "sds": ("sds", "EditSDS", "EditSDSConfig"),
}


def edit_score_class(name: str) -> tuple[type, type]:
    """-> (score class, config class); ValueError naming the choices for an unknown name."""
    if name not in EDIT_SCORES:
        raise ValueError(f"unknown editing guidance {name!r}; choose one of {', '.join(EDIT_SCORES)}")
    module, score, config = EDIT_SCORES[name]
    loaded = import_module(f"{__package__}.{module}")
    return getattr(loaded, score), getattr(loaded, config)


def build_edit_score(name: str, prior: DiffusionPrior, config=None, total_steps: int = 1000) -> "EditScore":
    score, config_class = edit_score_class(name)
    return score(prior, config or config_class(), total_steps=total_steps)


@dataclass
class EditConfig:
    """The fields every editing score's config has; each score's config extends it."""

    timesteps: TimestepConfig = field(default_factory=TimestepConfig)
    grad_clip: Scheduled | None = None  # elementwise clamp of g (a number or a schedule); None = off


class EditScore(ABC):
    """Base class. Subclasses set `name`, `needs_source`, `unet_evals` (UNet batch items per view
    per step) and `config_class` (an `EditConfig` dataclass; `config` defaults to its defaults)
    and define `gradient`; `noises` is how many independent noise tensors a step draws (PDS: 2)."""

    name = "edit"
    needs_source = True
    noises = 1
    unet_evals: int
    config_class: type

    def __init__(self, prior: DiffusionPrior, config=None, total_steps: int = 1000):
        self.prior = prior
        self.config = config = config or self.config_class()
        self.total_steps = total_steps
        self.schedule = TimestepSchedule(config.timesteps, prior.num_train_timesteps, total_steps)

    @abstractmethod
    def gradient(self, y: torch.Tensor, y_src: torch.Tensor | None, t: torch.Tensor, noise: list[torch.Tensor],
                 target: TextEmbedding, source: TextEmbedding, uncond: TextEmbedding, step: int) -> torch.Tensor:
        """g [B, c, h, w] for the render's latents y, the source's y_src (None when not needed),
        timesteps t [B], `noises` noise tensors shaped like y, and per-view embeddings of the target
        prompt, the source prompt and the unconditional prompt."""

    def unet_evals_per_step(self) -> int:
        """UNet batch-item evaluations per view per step."""
        return self.unet_evals

    def sample_timesteps(self, step: int, batch: int, generator: torch.Generator | None) -> torch.Tensor:
        return self.schedule.sample(step, batch, generator)

    def __call__(self, render, source, target, source_prompts, step: int,
                 generator: torch.Generator | None = None) -> GuidanceOutput:
        """render / source: RenderOutput of the edited and the original asset from the same cameras
        (source may be None when `needs_source` is False); target / source_prompts: PromptBatch."""
        y = self.prior.encode_images(images_from_render(render.rgb))
        y_src = None
        if self.needs_source:
            if source is None:
                raise ValueError(f"{self.name} needs the source render")
            with torch.no_grad():
                y_src = self.prior.encode_images(images_from_render(source.rgb.detach()))
        t = self.sample_timesteps(step, y.shape[0], generator).to(y.device)
        noise = [torch.randn(y.shape, generator=generator).to(y.device, y.dtype) for _ in range(self.noises)]
        grad = self.gradient(y.detach(), y_src, t, noise, target.cond, source_prompts.cond, target.uncond, step)
        clip = self.config.grad_clip
        grad = clip_gradient(grad, None if clip is None else scheduled_value(clip, step))
        return GuidanceOutput(loss=target_trick_loss(y, grad),
                              logs={"t": t.float().mean().item(), "grad_norm": grad.norm().item()})

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def predict(prior: DiffusionPrior, pairs: list[tuple[torch.Tensor, TextEmbedding]],
            t: torch.Tensor) -> list[torch.Tensor]:
    """One batched, gradient-free UNet call for several (x_t [B, ...], text [B]) pairs at the same
    timesteps t [B]; -> one eps-prediction [B, ...] per pair."""
    with torch.no_grad():
        eps = prior.predict_noise(torch.cat([x for x, _ in pairs]), torch.cat([t] * len(pairs)),
                                  TextEmbedding.cat([text for _, text in pairs]))
    return list(eps.chunk(len(pairs)))


def guided_pair(prior: DiffusionPrior, y: torch.Tensor, y_src: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                target: TextEmbedding, source: TextEmbedding, uncond: TextEmbedding,
                scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The edited render y and the source y_src [B, ...] noised with the same `noise` at t [B], and
    each one's classifier-free-guided eps (target prompt for y, source prompt for y_src) at `scale`,
    in one UNet call; -> (x_tgt, x_src, eps_tgt, eps_src)."""
    x_tgt, x_src = prior.add_noise(y, noise, t), prior.add_noise(y_src, noise, t)
    cond_tgt, uncond_tgt, cond_src, uncond_src = predict(
        prior, [(x_tgt, target), (x_tgt, uncond), (x_src, source), (x_src, uncond)], t)
    return x_tgt, x_src, cfg_combine(cond_tgt, uncond_tgt, scale), cfg_combine(cond_src, uncond_src, scale)
