"""The interface every 3D representation implements; guidance never sees more than this."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch
from torch import nn

from sds3d.cameras import Cameras
from sds3d.types import RenderOutput

if TYPE_CHECKING:
    from .mesh import Mesh


class Representation(nn.Module, ABC):
    """A differentiable 3D asset. Subclasses hold their tensors as nn.Parameters, so
    `parameters()`, `state_dict()` and `load_state_dict()` come from nn.Module.

    A representation a run can optimise is also registered (`registry.REPRESENTATIONS`) and has two
    class methods: `create(config, generator)`, a fresh one from its config section, and
    `initialise_from(source, config, generator, distill_steps)`, one shaped like another run's asset."""

    @abstractmethod
    def param_groups(self) -> list[dict]:
        """Optimiser groups: dicts with `name`, `params` (list of tensors) and `lr`."""

    @abstractmethod
    def render(self, cameras: Cameras, background: torch.Tensor | None = None) -> RenderOutput:
        """Render B views; `background` [3] or [B, 3] in [0, 1] (default white)."""

    @abstractmethod
    def to_mesh(self, resolution: int = 128, bound: float = 0.6) -> "Mesh":
        """A vertex-coloured surface `Mesh` of the asset, without gradients; fields are meshed on a
        `resolution` grid over [-bound, bound]^3."""

    def make_optimizers(self, lr_scale: float = 1.0) -> dict[str, torch.optim.Optimizer]:
        """One Adam per group (the layout gsplat's densification strategies expect)."""
        return {group["name"]: torch.optim.Adam([{"params": group["params"], "lr": group["lr"] * lr_scale,
                                                  "name": group["name"]}], eps=1e-15)
                for group in self.param_groups()}

    def before_backward(self, step: int, output: RenderOutput) -> None:
        """Called after `render`, before `loss.backward()` (e.g. to retain screen-space gradients)."""

    def after_step(self, step: int, output: RenderOutput, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Called after every optimiser step (densification, pruning, re-normalisation)."""

    def optimise(self, step: int, output: RenderOutput, loss: torch.Tensor,
                 optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """One optimiser step on `loss`, computed from this step's `output`, with the hooks around it:
        `before_backward`, zero_grad / backward / step on every optimiser, then `after_step`."""
        self.before_backward(step, output)
        for optimizer in optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers.values():
            optimizer.step()
        self.after_step(step, output, optimizers)

    def finish(self, background: torch.Tensor, optimizers: dict[str, torch.optim.Optimizer]) -> dict:
        """Called once after the last optimiser step, before the final checkpoint, with the run's solid
        training background ([3] RGB); -> numbers for metrics.json (e.g. what was pruned)."""
        return {}

    def training_state(self) -> dict:
        """Optimisation state outside `state_dict()` (e.g. densification statistics), for checkpoints."""
        return {}

    def load_training_state(self, state: dict) -> None:
        """Restores what `training_state()` returned."""

    def color_smoothness_loss(self, step: int) -> torch.Tensor | None:
        """A differentiable penalty on colour differences between nearby parts (scalar), for
        representations whose colours are independent parameters (Gaussians); None where colour comes
        from a smooth field (NeRF, mesh texture field)."""
        return None

    def stats(self) -> dict[str, int | float]:
        """A few numbers worth showing while optimising (e.g. {"gaussians": 5120})."""
        return {}

