"""Pinhole cameras in the OpenCV convention (x right, y down, z forward), as gsplat uses.

A `Cameras` batch holds B views: world->camera matrices `viewmats` [B, 4, 4], intrinsics `Ks`
[B, 3, 3] in pixels, and the image size. Orbit cameras look at the origin from elevation
(degrees above the xy-plane), azimuth (degrees, counter-clockwise seen from above) and radius.

World frame: +z is up, the object's front faces +x (azimuth 0 looks at the front).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch


@dataclass
class Cameras:
    viewmats: torch.Tensor  # [B, 4, 4] world -> camera (OpenCV)
    Ks: torch.Tensor  # [B, 3, 3] pixels, principal point at the image centre
    width: int
    height: int
    elevation: torch.Tensor | None = None  # [B] degrees, for view-dependent prompts
    azimuth: torch.Tensor | None = None  # [B] degrees in [-180, 180)
    radius: torch.Tensor | None = None  # [B]
    fovy: torch.Tensor | None = None  # [B] degrees

    def __post_init__(self):
        if self.viewmats.ndim != 3 or self.viewmats.shape[1:] != (4, 4):
            raise ValueError(f"viewmats must be [B, 4, 4], got {tuple(self.viewmats.shape)}")
        if self.Ks.shape != (self.viewmats.shape[0], 3, 3):
            raise ValueError(f"Ks must be [B, 3, 3] matching viewmats, got {tuple(self.Ks.shape)}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    def __len__(self) -> int:
        return self.viewmats.shape[0]

    @property
    def device(self) -> torch.device:
        return self.viewmats.device

    def to(self, device) -> "Cameras":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, viewmats=self.viewmats.to(device), Ks=self.Ks.to(device),
                       elevation=move(self.elevation), azimuth=move(self.azimuth),
                       radius=move(self.radius), fovy=move(self.fovy))

    def __getitem__(self, index) -> "Cameras":
        index = [index] if isinstance(index, int) else index
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return replace(self, viewmats=self.viewmats[index], Ks=self.Ks[index],
                       elevation=pick(self.elevation), azimuth=pick(self.azimuth),
                       radius=pick(self.radius), fovy=pick(self.fovy))

    @property
    def camtoworlds(self) -> torch.Tensor:  # [B, 4, 4]
        return torch.linalg.inv(self.viewmats)

    @property
    def centers(self) -> torch.Tensor:  # [B, 3] camera positions in world space
        return self.camtoworlds[:, :3, 3]


def intrinsics_from_fov(fovy_deg: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[B] vertical field of view in degrees -> [B, 3, 3] intrinsics with square pixels."""
    fovy = torch.as_tensor(fovy_deg, dtype=torch.float32).reshape(-1)
    focal = 0.5 * height / torch.tan(torch.deg2rad(fovy) / 2)
    Ks = torch.zeros(fovy.shape[0], 3, 3)
    Ks[:, 0, 0] = focal
    Ks[:, 1, 1] = focal
    Ks[:, 0, 2] = width / 2
    Ks[:, 1, 2] = height / 2
    Ks[:, 2, 2] = 1
    return Ks


def orbit_position(elevation_deg, azimuth_deg, radius) -> torch.Tensor:
    """Camera centre [B, 3] on a sphere around the origin; +z up, azimuth 0 on the +x axis,
    azimuth 90 on the +y axis, elevation 90 straight above."""
    elev = torch.deg2rad(torch.as_tensor(elevation_deg, dtype=torch.float32).reshape(-1))
    azim = torch.deg2rad(torch.as_tensor(azimuth_deg, dtype=torch.float32).reshape(-1))
    r = torch.as_tensor(radius, dtype=torch.float32).reshape(-1)
    return torch.stack([r * torch.cos(elev) * torch.cos(azim),
                        r * torch.cos(elev) * torch.sin(azim),
                        r * torch.sin(elev)], dim=-1)


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """[B, 3] eyes -> [B, 4, 4] world->camera (OpenCV: +z towards the target, +y image-down)."""
    target = torch.zeros_like(eye) if target is None else target.expand_as(eye)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    up_vec = torch.tensor(up, dtype=eye.dtype).expand_as(eye)
    # Straight above or below: the up vector is parallel to the view direction, use +x instead.
    parallel = torch.linalg.cross(forward, up_vec).norm(dim=-1) < 1e-6
    up_vec = torch.where(parallel[:, None], torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype), up_vec)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up_vec), dim=-1)
    down = torch.linalg.cross(forward, right)
    rotation = torch.stack([right, down, forward], dim=1)  # rows: camera axes in world coords
    viewmats = torch.eye(4, dtype=eye.dtype).repeat(eye.shape[0], 1, 1)
    viewmats[:, :3, :3] = rotation
    viewmats[:, :3, 3] = -(rotation @ eye[:, :, None])[:, :, 0]
    return viewmats


def orbit_cameras(elevation, azimuth, radius, fovy, width: int, height: int | None = None) -> Cameras:
    """Cameras looking at the origin. Scalars broadcast against [B] tensors (degrees)."""
    height = width if height is None else height
    elev, azim, r, fov = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float32).reshape(-1)
                                                  for v in (elevation, azimuth, radius, fovy)))
    viewmats = look_at(orbit_position(elev, azim, r))
    return Cameras(viewmats=viewmats, Ks=intrinsics_from_fov(fov, width, height), width=width,
                   height=height, elevation=elev.clone(), azimuth=azim.clone(), radius=r.clone(),
                   fovy=fov.clone())


def turntable_cameras(n_views: int, elevation: float = 15.0, radius: float = 2.5, fovy: float = 40.0,
                      width: int = 128, height: int | None = None) -> Cameras:
    """`n_views` cameras evenly spaced in azimuth, starting at the front (azimuth 0)."""
    azimuth = torch.arange(n_views, dtype=torch.float32) * (360.0 / n_views)
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    return orbit_cameras(elevation, azimuth, radius, fovy, width, height)


@dataclass
class CameraSampler:
    """Random orbit cameras for score distillation (ranges are inclusive, degrees / world units)."""

    width: int = 64
    height: int = 64
    elevation_range: tuple[float, float] = (-10.0, 45.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    radius_range: tuple[float, float] = (2.2, 2.8)
    fovy_range: tuple[float, float] = (35.0, 45.0)
    uniform_sphere: bool = field(default=False)  # elevation uniform on the sphere, not in angle

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Cameras:
        u = torch.rand(4, batch_size, generator=generator)
        lerp = lambda lo_hi, x: lo_hi[0] + (lo_hi[1] - lo_hi[0]) * x  # noqa: E731
        if self.uniform_sphere:
            lo, hi = (math.sin(math.radians(v)) for v in self.elevation_range)
            elevation = torch.rad2deg(torch.asin(lo + (hi - lo) * u[0]))
        else:
            elevation = lerp(self.elevation_range, u[0])
        azimuth = lerp(self.azimuth_range, u[1])
        azimuth = (azimuth + 180.0) % 360.0 - 180.0
        return orbit_cameras(elevation, azimuth, lerp(self.radius_range, u[2]),
                             lerp(self.fovy_range, u[3]), self.width, self.height)


CAMERA_FEATURES = 6  # width of `camera_features`


def camera_features(elevation, azimuth, radius, fovy) -> torch.Tensor:
    """[B, 6] inputs of a camera-conditioned prior (prior v2), from orbit parameters in degrees /
    world units: (sin, cos) of elevation, (sin, cos) of azimuth (0 = the object's front), and the
    radius and vertical field of view centred and scaled on the training ranges (2.2-2.8, 35-45 deg).
    Periodic in azimuth, so -180 and 180 give the same features."""
    elev, azim, r, fov = (torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in (elevation, azimuth, radius, fovy))
    e, a = torch.deg2rad(elev), torch.deg2rad(azim)
    return torch.stack([e.sin(), e.cos(), a.sin(), a.cos(), (r - 2.5) / 0.3, (fov - 40.0) / 5.0], dim=-1)


def cameras_features(cameras: Cameras) -> torch.Tensor:
    """`camera_features` of orbit cameras ([B, 6]); ValueError for cameras without orbit parameters."""
    if any(v is None for v in (cameras.elevation, cameras.azimuth, cameras.radius, cameras.fovy)):
        raise ValueError("a camera-conditioned prior needs orbit cameras (elevation, azimuth, radius, fovy)")
    return camera_features(cameras.elevation, cameras.azimuth, cameras.radius, cameras.fovy).to(cameras.device)
