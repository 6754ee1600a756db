"""A tiny randomly initialised embedded prior (2-level UNet, 16/32 channels) for tests that need the
real UNet/scheduler wiring but not a trained model."""

from __future__ import annotations

import torch

from sds3d.guidance.priors.embedded_prior import EmbeddedPrior
from sds3d.world.train_prior import build_scheduler, build_unet


def tiny_embedded_prior(camera_dim: int = 0, seed: int = 0) -> EmbeddedPrior:
    """A random prior with seed `seed`; `camera_dim` > 0 adds the camera token (zero-initialised)."""
    torch.manual_seed(seed)
    unet = build_unet((16, 32), head_dim=16, norm_num_groups=8, camera_dim=camera_dim)
    return EmbeddedPrior(unet, build_scheduler())
