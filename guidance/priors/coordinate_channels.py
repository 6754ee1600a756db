"""Pixel-coordinate input channels for the embedded prior's UNet (CoordConv).

A UNet's convolutions are translation-equivariant and its attention has no positional encoding, so a
global condition (the camera, or a view word) can only place a part left or right of the image
centre through the zero padding at the borders. Appending the pixel's (x, y) in [-1, 1] as two
input channels gives every layer its position. A UNet with `in_channels == out_channels + 2` takes
them; `attach_coordinate_channels` adds them to every call with a forward pre-hook, so callers keep
passing [B, out_channels, H, W] images. Weights for the two channels start at zero when a prior
without them is fine-tuned, so training starts from the same model.

Reference: Liu et al. 2018, "An intriguing failing of convolutional neural networks and the
CoordConv solution", arXiv:1807.03247.
"""

from __future__ import annotations

import torch

COORDINATE_CHANNELS = 2


def has_coordinate_channels(unet) -> bool:
    """True when the UNet's input has two channels more than its output: the (x, y) channels."""
    return int(unet.config.in_channels) == int(unet.config.out_channels) + COORDINATE_CHANNELS


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """[B, 2, H, W]: x (left -1 to right +1) and y (top -1 to bottom +1) of each pixel centre."""
    B, _, H, W = x.shape
    ys = (torch.arange(H, device=x.device, dtype=x.dtype) + 0.5) / H * 2 - 1
    xs = (torch.arange(W, device=x.device, dtype=x.dtype) + 0.5) / W * 2 - 1
    grid = torch.stack([xs.expand(H, W), ys[:, None].expand(H, W)])
    return grid.expand(B, 2, H, W)


def _append_coordinates(module, args, kwargs):
    sample = args[0] if args else kwargs["sample"]
    if sample.shape[1] == int(module.config.in_channels):  # already appended by the caller
        return None
    sample = torch.cat([sample, coordinate_channels(sample)], dim=1)
    if args:
        return (sample, *args[1:]), kwargs
    return args, {**kwargs, "sample": sample}


def attach_coordinate_channels(unet):
    """Make `unet(x [B, out_channels, H, W], ...)` append the coordinate channels (idempotent; a UNet
    without them is returned unchanged)."""
    if has_coordinate_channels(unet) and not getattr(unet, "_sds3d_coordinates", False):
        unet.register_forward_pre_hook(_append_coordinates, with_kwargs=True)
        unet._sds3d_coordinates = True
    return unet


def widen_input_for_coordinates(weight: torch.Tensor) -> torch.Tensor:
    """conv_in weight [C, in, k, k] of a UNet without coordinates -> [C, in + 2, k, k], the new
    channels' weights zero (the widened UNet predicts exactly what the old one did)."""
    C, _, kh, kw = weight.shape
    return torch.cat([weight, weight.new_zeros(C, COORDINATE_CHANNELS, kh, kw)], dim=1)
