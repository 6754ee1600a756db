"""Render-and-fit distillation of one representation into another (PVD's final stage)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from sds3d.cameras import CameraSampler
from .base import Representation


def distill(source: Representation, target: Representation, steps: int, sampler: CameraSampler | None = None,
            batch_size: int = 4, alpha_weight: float = 1.0, lr_scale: float = 1.0,
            generator: torch.Generator | None = None,
            callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Fit `target` to `source` by rendering both from the same random orbit cameras (PVD's final
    stage: the teacher's rendered RGB is the ground truth; representations of
    different kinds share no intermediate features, so only images are compared).

    Per step: B = batch_size cameras from `sampler`, one random background colour (so coverage is
    visible in rgb too), loss = MSE(rgb) + alpha_weight * MSE(alpha), one step of each of the
    target's optimisers (`make_optimizers(lr_scale)`) with its before_backward / after_step hooks
    (Gaussian densification keeps working). Returns the loss per step."""
    sampler = sampler or CameraSampler()
    optimizers = target.make_optimizers(lr_scale)
    device = next(target.parameters()).device
    losses = []
    for step in range(steps):
        cameras = sampler.sample(batch_size, generator).to(device)
        background = torch.rand(3, generator=generator).to(device)
        with torch.no_grad():
            teacher = source.render(cameras, background)
        student = target.render(cameras, background)
        loss = F.mse_loss(student.rgb, teacher.rgb) + alpha_weight * F.mse_loss(student.alpha, teacher.alpha)
        target.optimise(step, student, loss, optimizers)
        losses.append(loss.item())
        if callback is not None:
            callback(step, losses[-1])
    return losses



__all__ = ["distill"]
