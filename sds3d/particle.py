"""One representation under optimisation together with its optimisers.

A run trains one particle, or with VSD `particles = n` of them sharing one LoRA (ProlificDreamer's particles).
Each particle has its own Adam per parameter group, so particles never share optimiser moments.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sds3d.representations import Representation


@dataclass
class Particle:
    representation: Representation
    optimizers: dict[str, torch.optim.Optimizer]

    @classmethod
    def create(cls, representation: Representation, lr_scale: float) -> "Particle":
        return cls(representation, representation.make_optimizers(lr_scale))

    def state_dict(self) -> dict:
        """{"representation", "optimizers", "training_state"}: everything needed to resume exactly."""
        return {"representation": self.representation.state_dict(),
                "optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
                "training_state": self.representation.training_state()}

    def load_state_dict(self, state: dict, lr_scale: float) -> None:
        """Restores a `state_dict()`. The optimisers are rebuilt first: loading can change the
        parameter shapes (densified Gaussians), which the old optimisers would not follow."""
        self.representation.load_state_dict(state["representation"])
        self.optimizers = self.representation.make_optimizers(lr_scale)
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.representation.load_training_state(state["training_state"])


def particle_count(config) -> int:
    """How many representations a run (a GenerateConfig) trains: the guidance section's `particles`
    (VSD, ReDream), else 1."""
    count = getattr(getattr(config, config.guidance, None), "particles", 1)
    if count < 1:
        raise ValueError(f"{config.guidance}.particles must be at least 1, got {count}")
    return count
