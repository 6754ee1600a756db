"""Keeps NaN and inf out of a run's parameters.

A step whose loss or gradients are not finite is skipped (no optimiser steps) and every learning rate
is halved, once per run; the next such step, or parameters that stop being finite anyway, end the run
with `TrainingDiverged`, whose one line says which step, what went wrong and which checkpoint is kept.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import TrainingDiverged

MAX_BACKOFFS = 1


class NonFiniteStep(Exception):
    """A step whose loss or gradients hold NaN or inf; its gradients are cleared, nothing has stepped."""


class FiniteGuard:
    def __init__(self, out: Path, backoffs: int = 0, last_checkpoint: int | None = None):
        self.out = Path(out)
        self.backoffs = backoffs  # learning-rate halvings so far (saved in checkpoints)
        self.last_checkpoint = last_checkpoint  # step of the newest checkpoint on disk, None if none

    def check_gradients(self, loss: torch.Tensor, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Raises NonFiniteStep (after clearing the gradients) if the loss or a gradient is not finite."""
        problem = None if torch.isfinite(loss).all() else "non-finite loss"
        if problem is None:
            problem = next((f"non-finite gradients of {name}" for name, optimizer in optimizers.items()
                            for group in optimizer.param_groups for param in group["params"]
                            if param.grad is not None and not torch.isfinite(param.grad).all()), None)
        if problem is not None:
            for optimizer in optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            raise NonFiniteStep(problem)

    def check_parameters(self, module: torch.nn.Module, step: int) -> None:
        """TrainingDiverged if a parameter of `module` holds NaN or inf after `step`'s update."""
        bad = next((name for name, param in module.named_parameters() if not torch.isfinite(param).all()), None)
        if bad is not None:
            self.stop(step, f"non-finite parameters ({bad}) after the update")

    def back_off(self, problem: NonFiniteStep, step: int, optimizers: list[torch.optim.Optimizer]) -> None:
        """After a skipped step: halves every learning rate the first time, stops the run the next."""
        if self.backoffs >= MAX_BACKOFFS:
            self.stop(step, f"{problem} again after the learning rates were halved")
        self.backoffs += 1
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * 0.5

    def stop(self, step: int, what: str) -> None:
        kept = ("nothing of this run was saved" if self.last_checkpoint is None else
                f"{self.out / 'checkpoint.pt'} keeps the last good state (step {self.last_checkpoint})")
        raise TrainingDiverged(f"training diverged at step {step + 1}: {what}; {kept}; lower the learning rates "
                               f"or the guidance scale")
