"""Backgrounds composited behind renders during distillation: white, random or learned."""

from __future__ import annotations

import torch
from torch import nn

from .cameras import Cameras

KINDS = ("white", "random", "learned")


class Background(nn.Module):
    """`background(cameras, generator) -> [B, 3]` solid colours in [0, 1].

    "white" matches the embedded prior's training renders; "random" draws a solid colour per view
    with probability `random_p` (else white), which discourages the asset from painting the
    background into itself; "learned" is a small MLP of the viewing direction, optimised jointly.
    """

    def __init__(self, kind: str = "white", random_p: float = 0.5):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown background {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind = kind
        self.random_p = random_p
        self.mlp = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 3)) if kind == "learned" else None
        if self.mlp is not None:
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.constant_(self.mlp[2].bias, 4.0)  # starts (nearly) white

    def forward(self, cameras: Cameras, generator: torch.Generator | None = None) -> torch.Tensor:
        n = len(cameras)
        if self.kind == "white":
            return torch.ones(n, 3)
        if self.kind == "random":
            colours = torch.rand(n, 3, generator=generator)
            keep_white = torch.rand(n, generator=generator) >= self.random_p
            return torch.where(keep_white[:, None], torch.ones(n, 3), colours)
        directions = torch.nn.functional.normalize(-cameras.centers, dim=-1)
        return torch.sigmoid(self.mlp(directions.to(self.mlp[0].weight)))
