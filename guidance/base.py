"""What every guidance variant shares: its output type, the target trick and the call signature."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from sds3d.representations.alpha_regularizers import alpha_entropy, alpha_sparsity
from .priors.prior import DiffusionPrior
from .schedules import scheduled_value


@dataclass
class GuidanceOutput:
    loss: torch.Tensor  # scalar; its gradient w.r.t. the render is the guidance
    logs: dict = field(default_factory=dict)  # floats for progress bars and metrics


def target_trick_loss(y: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The target trick: a loss whose value is 0.5 * sum(g^2) / B (that of DreamFusion's
    0.5 * sum((y - stopgrad(y - g))^2) / B) and whose gradient is dL/dy = g / B (B = y.shape[0]).

    Written as sum(y * stopgrad(g / B)) + constant so the gradient is g / B bit for bit: the literal
    form yields y - fl(y - g), which differs from g in the last bits.
    """
    scaled = (grad / y.shape[0]).detach()
    constant = 0.5 * (grad.detach() ** 2).sum() / y.shape[0] - (y.detach() * scaled).sum()
    return (y * scaled).sum() + constant


def clip_gradient(grad: torch.Tensor, clip: float | None) -> torch.Tensor:
    """Elementwise clamp to [-clip, clip] when `clip` is set. NaN stays NaN (and an unclipped inf
    stays inf): a non-finite guidance is never hidden as zero, so the loop's finite guard skips the
    step and then stops the run with one line."""
    return grad if clip is None else grad.clamp(-clip, clip)


def images_from_render(rgb: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 3] in [0, 1] -> [B, 3, H, W]."""
    return rgb.permute(0, 3, 1, 2)


class Guidance(ABC):
    """Base class: `guidance(render, prompts, cameras, step, generator) -> GuidanceOutput`."""

    name = "guidance"

    def __init__(self, prior: DiffusionPrior, total_steps: int):
        self.prior = prior
        self.total_steps = total_steps

    @abstractmethod
    def __call__(self, render, prompts, cameras, step: int, generator: torch.Generator | None = None) -> GuidanceOutput:
        """render: RenderOutput, prompts: PromptBatch (cond/uncond per view), cameras: Cameras."""

    def representation_lr_scale(self) -> float:
        """Factor on the representation's learning rates; a variant whose gradient is a cleaner signal
        than SDS's (Adam normalises its size, not its noise) may want smaller steps: its config's
        `lr_scale` field, 1.0 without one."""
        return float(getattr(getattr(self, "config", None), "lr_scale", 1.0))

    def alpha_regularizer_loss(self, alpha: torch.Tensor, step: int) -> torch.Tensor | None:
        """Floater regularisers on the render's alpha [B, H, W, 1], weighted by the config's scheduled
        `alpha_sparsity` and `alpha_entropy` (None without them, or when both are 0 at `step`).
        Sum-reduced per view like the target trick, so a weight w pulls each pixel with w / B, on the
        scale of g (for variants without a fresh-noise term, whose reference systems use them)."""
        config = getattr(self, "config", None)
        weights = [scheduled_value(getattr(config, name, 0.0), step) for name in ("alpha_sparsity", "alpha_entropy")]
        if not any(weights):
            return None
        pixels = alpha.shape[1] * alpha.shape[2]
        return pixels * (weights[0] * alpha_sparsity(alpha) + weights[1] * alpha_entropy(alpha))

    def color_smoothness_weight(self, step: int) -> float:
        """The config's scheduled `color_smoothness` (0 without one): the weight on the representation's
        `color_smoothness_loss`, for variants whose update barely removes colour noise (fixed noise)."""
        return scheduled_value(getattr(getattr(self, "config", None), "color_smoothness", 0.0), step)

    # Variants with state (LoRA, fixed noise) override these so runs can be resumed.
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class NoisedRenderGuidance(Guidance):
    """The common step of SDS-style variants: encode the render, draw t from `self.schedule` and
    fresh noise, then apply `self.gradient(y, t, noise, cond, uncond, step)` with the target trick."""

    def __call__(self, render, prompts, cameras, step: int, generator: torch.Generator | None = None) -> GuidanceOutput:
        y = self.prior.encode_images(images_from_render(render.rgb))
        t = self.schedule.sample(step, y.shape[0], generator).to(y.device)
        noise = torch.randn(y.shape, generator=generator).to(y.device, y.dtype)
        grad = self.gradient(y, t, noise, prompts.cond, prompts.uncond, step)
        return GuidanceOutput(loss=target_trick_loss(y, grad),
                              logs={"t": t.float().mean().item(), "grad_norm": grad.norm().item()})
