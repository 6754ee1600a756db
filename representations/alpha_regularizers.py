"""Regularisers of a render's alpha [B, H, W, 1] in [0, 1] that remove floaters and fog.

- sparsity: mean(sqrt(alpha^2 + 0.01)), a smooth L1 that pulls every pixel towards empty;
- entropy: the mean binary entropy of alpha, which pushes pixels to fully empty or fully opaque.

They are threestudio's `loss_sparsity` and `loss_opaque` (the NeRF systems of DreamFusion, DSD and SDI).
"""

from __future__ import annotations

import torch


def alpha_sparsity(alpha: torch.Tensor) -> torch.Tensor:
    """Scalar: mean over pixels of sqrt(alpha^2 + 0.01)."""
    return torch.sqrt(alpha**2 + 0.01).mean()


def alpha_entropy(alpha: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Scalar: mean over pixels of -(a log a + (1 - a) log(1 - a)), a = alpha clamped to [eps, 1 - eps]."""
    a = alpha.clamp(eps, 1 - eps)
    return -(a * torch.log(a) + (1 - a) * torch.log(1 - a)).mean()
