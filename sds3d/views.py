"""View bins shared by prompts, the micro-world captions and the evaluator.

A camera at azimuth 0 looks at the object's front (objects face +x). Bins:
"overhead" when elevation >= `overhead_elevation`, else "front" when |azimuth| <= `front_half_angle`,
"back" when |azimuth| >= 180 - `back_half_angle`, else "side".
"""

from __future__ import annotations

import torch

VIEW_BINS = ("front", "side", "back", "overhead")
VIEW_WORDS = {"front": "front view", "side": "side view", "back": "back view", "overhead": "overhead view"}
VIEW_AZIMUTHS = {"front": 0.0, "side": 90.0, "back": 180.0, "overhead": 0.0}  # each bin's centre, degrees


def view_bins(elevation, azimuth, front_half_angle: float = 45.0, back_half_angle: float = 45.0,
              overhead_elevation: float = 60.0) -> list[str]:
    """[B] elevation, azimuth in degrees -> B bin names."""
    elevation = torch.as_tensor(elevation, dtype=torch.float32).reshape(-1)
    azimuth = torch.as_tensor(azimuth, dtype=torch.float32).reshape(-1)
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    bins = []
    for elev, azim in zip(elevation.tolist(), azimuth.tolist()):
        if elev >= overhead_elevation:
            bins.append("overhead")
        elif abs(azim) <= front_half_angle:
            bins.append("front")
        elif abs(azim) >= 180.0 - back_half_angle:
            bins.append("back")
        else:
            bins.append("side")
    return bins
