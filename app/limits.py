"""What one request may ask for; the operator sets `max_steps` with `sds3d app --max-steps`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 300
    max_steps: int = 1000
    resolutions: tuple[int, ...] = (32, 64, 128)
    max_seed: int = 2**31 - 1
    max_guidance_scale: float = 1000.0
    max_particles: int = 4  # VSD particles per run (each costs a full run's steps)
    max_retrieve_k: int = 8  # assets retrieved from a library (each is rendered to adapt the prior)
