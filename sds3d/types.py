"""Small typed objects passed between representations, renderers and guidance."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RenderOutput:
    """What `Representation.render(cameras)` returns. Colours are composited over `background`."""

    rgb: torch.Tensor  # [B, H, W, 3] in [0, 1]
    alpha: torch.Tensor  # [B, H, W, 1] in [0, 1]
    depth: torch.Tensor  # [B, H, W, 1] expected camera-space z where alpha > 0, else 0
    features: torch.Tensor | None = None  # [B, H, W, D] extra channels, alpha-weighted (not composited)
    normal: torch.Tensor | None = None  # [B, H, W, 3] world-space, when the representation has them
    meta: dict | None = None  # representation-specific extras (e.g. `means2d`, `radii` for densification)
