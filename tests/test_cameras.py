import math

import pytest
import torch

from sds3d.cameras import CameraSampler, Cameras, look_at, orbit_cameras, turntable_cameras
from sds3d.views import view_bins


def project(cameras: Cameras, points: torch.Tensor) -> torch.Tensor:
    """[P, 3] world -> [B, P, 3] (u, v, z)."""
    cam = points @ cameras.viewmats[:, :3, :3].transpose(1, 2) + cameras.viewmats[:, None, :3, 3]
    uv = (cam @ cameras.Ks.transpose(1, 2))
    return torch.cat([uv[..., :2] / uv[..., 2:], cam[..., 2:]], dim=-1)


@pytest.mark.parametrize("elevation,azimuth", [(0, 0), (30, 90), (-20, -135), (89.9, 10), (90, 0), (-90, 0)])
def test_orbit_camera_looks_at_origin(elevation, azimuth):
    cams = orbit_cameras(elevation, azimuth, 2.5, 40, 64)
    R = cams.viewmats[0, :3, :3]
    torch.testing.assert_close(R @ R.T, torch.eye(3), atol=1e-5, rtol=0)
    assert torch.det(R) == pytest.approx(1.0, abs=1e-5)
    uvz = project(cams, torch.zeros(1, 3))[0, 0]
    torch.testing.assert_close(uvz, torch.tensor([32.0, 32.0, 2.5]), atol=1e-4, rtol=0)
    torch.testing.assert_close(cams.centers[0].norm(), torch.tensor(2.5), atol=1e-5, rtol=0)


def test_image_axes_follow_opencv_with_z_up():
    cams = orbit_cameras(0, 0, 3, 40, 64)  # on +x, looking at -x
    uvz = project(cams, torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.5, 0.0]]))[0]
    assert uvz[0, 1] < 32  # world up appears towards the top of the image (smaller v)
    assert uvz[1, 0] > 32  # +y is to the right when looking from +x towards the origin


def test_focal_length_matches_fov():
    cams = orbit_cameras(0, 0, 2.0, 60, 100)
    half_height = 2.0 * math.tan(math.radians(30))
    uvz = project(cams, torch.tensor([[0.0, 0.0, half_height]]))[0, 0]
    assert uvz[1].item() == pytest.approx(0.0, abs=1e-3)


def test_sampler_ranges_and_determinism():
    sampler = CameraSampler(width=32, height=32, elevation_range=(-10, 45), radius_range=(2, 3))
    a = sampler.sample(64, torch.Generator().manual_seed(3))
    b = sampler.sample(64, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.viewmats, b.viewmats)
    assert a.elevation.min() >= -10 and a.elevation.max() <= 45
    assert a.radius.min() >= 2 and a.radius.max() <= 3
    assert ((a.azimuth >= -180) & (a.azimuth < 180)).all()
    torch.testing.assert_close(a.centers.norm(dim=-1), a.radius, atol=1e-4, rtol=0)


def test_cameras_index_and_validation():
    cams = turntable_cameras(8, width=16)
    assert len(cams) == 8 and len(cams[2]) == 1 and len(cams[[0, 4]]) == 2
    assert cams.azimuth[0] == 0 and cams.azimuth[4] == -180
    with pytest.raises(ValueError, match="viewmats"):
        Cameras(torch.eye(4), torch.eye(3)[None], 8, 8)
    with pytest.raises(ValueError, match="positive"):
        Cameras(torch.eye(4)[None], torch.eye(3)[None], 0, 8)


def test_look_at_straight_down_is_finite():
    viewmat = look_at(torch.tensor([[0.0, 0.0, 3.0]]))
    assert torch.isfinite(viewmat).all()


def test_view_bins():
    assert view_bins([0, 0, 0, 0, 70], [0, 90, -180, 170, 0]) == ["front", "side", "back", "back", "overhead"]
    assert view_bins([10], [46]) == ["side"] and view_bins([10], [-44]) == ["front"]
