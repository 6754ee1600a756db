"""Per-pixel camera rays as input channels of the embedded prior's UNet (Plücker ray maps).

The camera token (`camera_token.py`) reaches the UNet through cross-attention at 16x16 and below,
one vector for the whole image. A ray map gives every pixel of the input its ray in world space,
the unit direction d and the moment o x d of the ray through the camera centre o (Plücker
coordinates, 6 channels), so the first convolution already sees where the camera stands and which
way each pixel looks, as CAT3D and SPAD condition their multi-view models.

A UNet with `in_channels == out_channels + RAY_CHANNELS` takes them. `attach_camera_rays` appends
them to every call with a forward pre-hook that reads the call's `camera=` features
(`sds3d.cameras.camera_features`), so callers keep passing [B, out_channels, H, W] images; it must be
registered before the camera token's hook, which consumes `camera=`. All-zero features ("no camera",
camera dropout) give all-zero rays. The rays' conv_in weights start at zero when a prior without
them is fine-tuned, so training starts from the same model. The rays enter multiplied by `RAY_GAIN`:
Adam moves a weight by about its learning rate per step whatever the gradient's scale, so the gain makes
those zero-initialised weights' effect grow `RAY_GAIN` times faster (the runtime weight scaling of
Karras et al. 2018's equalised learning rate), as the camera token learns at `camera_lr_scale` = 20
times the base rate. At the base rate they stayed at 0.6% of the image channels' weights after 1,000 steps.

Reference: Plücker line coordinates as camera conditioning: Sitzmann et al. 2021, "Light Field
Networks", arXiv:2106.02634; Kant et al. 2024, "SPAD: Spatially Aware Multi-View Diffusers",
arXiv:2402.05235; Gao et al. 2024, "CAT3D: Create Anything in 3D with Multi-View Diffusion Models",
arXiv:2405.10314.
"""

from __future__ import annotations

import torch

from sds3d.cameras import look_at, orbit_position

RAY_CHANNELS = 6
MOMENT_SCALE = 2.5  # the orbit radius the features are centred on: moments |o x d| <= radius become O(1)
RAY_GAIN = 20.0


def has_camera_rays(unet) -> bool:
    """True when the UNet's input has `RAY_CHANNELS` channels more than its output."""
    return int(unet.config.in_channels) == int(unet.config.out_channels) + RAY_CHANNELS


def camera_rays(camera: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """camera features [B, 6] -> [B, 6, H, W]: `RAY_GAIN` times each pixel centre's world ray direction
    d (unit) and moment o x d / `MOMENT_SCALE`, for the orbit camera the features describe (looking at the origin,
    +z up, pinhole with the principal point at the image centre); zeros where the features are all zero.
    Computed in fp32 on the CPU, also under autocast."""
    with torch.autocast(camera.device.type, enabled=False):
        return _rays(camera.detach().float().cpu(), height, width).to(camera.device)


def _rays(camera: torch.Tensor, height: int, width: int) -> torch.Tensor:
    elevation = torch.rad2deg(torch.atan2(camera[:, 0], camera[:, 1]))
    azimuth = torch.rad2deg(torch.atan2(camera[:, 2], camera[:, 3]))
    radius = 2.5 + 0.3 * camera[:, 4]
    fovy = torch.deg2rad(40.0 + 5.0 * camera[:, 5])
    eye = orbit_position(elevation, azimuth, radius)  # [B, 3]
    rotation = look_at(eye)[:, :3, :3]  # rows: right, down, forward in world coordinates
    focal = 0.5 * height / torch.tan(fovy / 2)  # [B] pixels
    ys = torch.arange(height, dtype=torch.float32) + 0.5 - height / 2
    xs = torch.arange(width, dtype=torch.float32) + 0.5 - width / 2
    local = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width),
                         torch.ones(height, width)], dim=-1)  # [H, W, 3] at focal length 1 after division
    local = local[None] / torch.stack([focal, focal, torch.ones_like(focal)], dim=-1)[:, None, None]
    direction = torch.nn.functional.normalize(torch.einsum("bhwi,bij->bhwj", local, rotation), dim=-1)
    moment = torch.linalg.cross(eye[:, None, None].expand_as(direction), direction, dim=-1) / MOMENT_SCALE
    rays = RAY_GAIN * torch.cat([direction, moment], dim=-1).permute(0, 3, 1, 2)
    known = camera.abs().sum(dim=-1) > 0
    return rays * known[:, None, None, None]


def _append_rays(unet, args, kwargs):
    sample = args[0] if args else kwargs["sample"]
    camera = kwargs.get("camera")
    if camera is None or sample.shape[1] == int(unet.config.in_channels):
        return None  # the camera token's hook names the missing camera; or appended by the caller
    rays = camera_rays(camera, sample.shape[-2], sample.shape[-1]).to(device=sample.device, dtype=sample.dtype)
    sample = torch.cat([sample, rays], dim=1)
    if args:
        return (sample, *args[1:]), kwargs
    return args, {**kwargs, "sample": sample}


def attach_camera_rays(unet):
    """Make `unet(x [B, out_channels, H, W], ..., camera=features)` append the ray channels (idempotent;
    a UNet without them is returned unchanged). Register before `attach_camera_token`."""
    if has_camera_rays(unet) and not getattr(unet, "_sds3d_camera_rays", False):
        unet.register_forward_pre_hook(_append_rays, with_kwargs=True)
        unet._sds3d_camera_rays = True
    return unet
