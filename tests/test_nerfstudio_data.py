"""The nerfstudio data format: a micro-world capture reads back into the cameras that rendered it,
nerfstudio's OpenGL camera-to-world becomes the right OpenCV view (checked by rendering), per-frame
intrinsics and distortion, and bad captures fail in one line naming the file and the field."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from sds3d.errors import InputError
from sds3d.representations import Gaussians, GaussiansConfig
from sds3d.scene.nerfstudio_data import load_capture, undistort
from sds3d.world.capture import capture_cameras, main as capture_main, render_capture, write_capture


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    out = tmp_path_factory.mktemp("captures") / "mug"
    write_capture(out, "mug", "red", views=6, resolution=32, holdout=2)
    return out


def test_a_capture_reads_back_into_the_cameras_and_images_that_made_it(capture):
    data = load_capture(capture, use_nerfstudio=False)
    cameras = capture_cameras(6, 32)
    assert data.reader == "sds3d" and len(data) == 6 and (data.cameras.width, data.cameras.height) == (32, 32)
    torch.testing.assert_close(data.cameras.viewmats, cameras.viewmats, atol=1e-6, rtol=0)
    torch.testing.assert_close(data.cameras.Ks, cameras.Ks, atol=0, rtol=0)
    rgb, alpha = render_capture("mug", "red", cameras)
    white = (rgb * alpha + 1 - alpha).permute(0, 3, 1, 2)
    assert (data.images - white).abs().max() < 1.5 / 255  # PNG quantisation of colour and alpha
    assert (data.alphas - alpha.permute(0, 3, 1, 2)).abs().max() <= 0.5 / 255 + 1e-6
    assert data.masks is None and data.splits == {"train": [1, 2, 4, 5], "test": [0, 3]}
    assert 0.05 < data.alphas.mean() < 0.6  # the mug is in view and does not fill it


def test_the_capture_script_refuses_a_folder_that_is_not_empty(capture, tmp_path, capsys):
    assert capture_main([str(capture), "--views", "2", "--resolution", "16"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and str(capture) in error
    assert capture_main([str(tmp_path / "x"), "--kind", "teapot"]) == 2
    assert not (tmp_path / "x").exists()


def test_a_blender_scene_reads_as_the_same_capture(capture, tmp_path):
    """nerf_synthetic's transforms: the field of view `camera_angle_x` instead of fl_x / w / h, and
    file paths without their suffix (in the json and its splits): the same cameras and images."""
    meta = json.loads((capture / "transforms.json").read_text())
    angle = 2 * math.atan(meta["w"] / (2 * meta["fl_x"]))
    blender = {"camera_angle_x": angle, "frames": [dict(f, file_path="./" + f["file_path"][:-4]) for f in meta["frames"]],
               "test_filenames": [name[:-4] for name in meta["test_filenames"]]}
    (tmp_path / "images").symlink_to(capture / "images")
    (tmp_path / "transforms_train.json").write_text(json.dumps(blender))
    data, original = load_capture(tmp_path / "transforms_train.json"), load_capture(capture, use_nerfstudio=False)
    assert data.reader == "sds3d" and data.splits["test"] == original.splits["test"]
    torch.testing.assert_close(data.cameras.Ks, original.cameras.Ks)
    torch.testing.assert_close(data.cameras.viewmats, original.cameras.viewmats)
    assert torch.equal(data.images, original.images) and torch.equal(data.alphas, original.alphas)


def test_a_16_bit_grey_image_keeps_its_values(tmp_path):
    grey = np.full((6, 8), round(0.25 * 65535), np.uint16)
    Image.fromarray(grey).save(tmp_path / "a.png")
    (tmp_path / "transforms.json").write_text(json.dumps(_meta()))
    data = load_capture(tmp_path)
    torch.testing.assert_close(data.images, torch.full((1, 3, 6, 8), 0.25), atol=1e-4, rtol=0)


def _write(folder, meta: dict, size=(8, 6), images=("a.png",), mode="RGB"):
    for name in images:
        Image.new(mode, size, (200, 10, 10) if mode == "RGB" else 0).save(folder / name)
    path = folder / "transforms.json"
    path.write_text(json.dumps(meta))
    return path


def _meta(**changes) -> dict:
    frame = {"file_path": "a.png", "transform_matrix": np.eye(4).tolist()}
    frame.update(changes.pop("frame", {}))
    meta = {"camera_model": "OPENCV", "fl_x": 10.0, "fl_y": 10.0, "cx": 4.0, "cy": 3.0, "w": 8, "h": 6,
            "frames": [frame]}
    meta.update(changes)
    return {k: v for k, v in meta.items() if v is not None}


def test_opengl_camera_to_world_renders_as_nerfstudio_sees_it(tmp_path):
    """A camera 3 units up the world's +z axis with nerfstudio's identity rotation looks down -z
    (OpenGL: the camera looks along its -z, image up is its +y). A Gaussian at world (0.6, 0.3, 0)
    must appear right of the centre by f 0.6 / 3 and above it by f 0.3 / 3 pixels."""
    c2w = np.eye(4)
    c2w[2, 3] = 3.0
    path = _write(tmp_path, _meta(fl_x=40.0, fl_y=40.0, cx=32.0, cy=24.0, w=64, h=48,
                                  frame={"transform_matrix": c2w.tolist()}), size=(64, 48))
    cameras = load_capture(path).cameras
    torch.testing.assert_close(cameras.centers, torch.tensor([[0.0, 0.0, 3.0]]))
    blob = Gaussians(torch.tensor([[0.6, 0.3, 0.0]]), torch.zeros(1, 3), scales=torch.full((1, 3), 0.02),
                     opacities=torch.ones(1) * 0.99, config=GaussiansConfig())
    with torch.no_grad():
        darkness = 1 - blob.render(cameras).rgb[0].mean(-1)  # [H, W]
    row, column = divmod(int(darkness.argmax()), 64)
    assert (column + 0.5, row + 0.5) == pytest.approx((32 + 40 * 0.6 / 3, 24 - 40 * 0.3 / 3), abs=0.6)


def test_per_frame_intrinsics_override_global_ones_and_frames_sort_by_path(tmp_path):
    meta = _meta()
    meta["frames"] = [{"file_path": "b.png", "transform_matrix": np.eye(4).tolist(), "fl_x": 20.0, "cx": 4.5},
                      {"file_path": "a.png", "transform_matrix": np.eye(4).tolist()}]
    data = load_capture(_write(tmp_path, meta, images=("a.png", "b.png")))
    assert [p.name for p in data.image_paths] == ["a.png", "b.png"]
    assert data.cameras.Ks[:, 0, 0].tolist() == [10.0, 20.0] and data.cameras.Ks[:, 0, 2].tolist() == [4.0, 4.5]
    assert data.cameras.Ks[:, 1, 1].tolist() == [10.0, 10.0]


def test_undistortion_moves_a_distorted_dot_to_its_pinhole_position():
    """A dot drawn where OpenCV's model sends the normalised point (0.3, -0.2) lands, after
    `undistort`, at the pinhole projection of that point."""
    k1, k2, k3, p1, p2 = -0.12, 0.03, 0.0, 0.002, -0.001
    K = torch.tensor([[50.0, 0, 40], [0, 50.0, 30], [0, 0, 1]])
    x, y = 0.3, -0.2
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    xd, yd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    v, u = torch.meshgrid(torch.arange(60) + 0.5, torch.arange(80) + 0.5, indexing="ij")
    dot = torch.exp(-((u - (50 * xd + 40)) ** 2 + (v - (50 * yd + 30)) ** 2) / 2.0)[None]
    straight, valid = undistort(dot, K, k1, k2, k3, p1, p2)
    row, column = divmod(int(straight[0].argmax()), 80)
    assert (column + 0.5, row + 0.5) == pytest.approx((50 * x + 40, 50 * y + 30), abs=0.75)
    assert valid.all()  # barrel distortion: the whole undistorted image has a source
    identity, _ = undistort(dot, K, 0, 0, 0, 0, 0)
    torch.testing.assert_close(identity, dot, atol=1e-5, rtol=0)


def test_images_downscaled_from_the_json_size_scale_the_intrinsics(tmp_path):
    (tmp_path / "masks").mkdir()
    mask = np.zeros((6, 8), np.uint8)  # at the json's size: follows the image's
    mask[:, 4:] = 255
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    meta = _meta(fl_x=10.0, fl_y=12.0, cx=4.0, cy=3.0, w=8, h=6, frame={"mask_path": "masks/a.png"})
    data = load_capture(_write(tmp_path, meta, size=(16, 12)))  # as nerfstudio's images_2 would be at 2x
    assert (data.cameras.width, data.cameras.height) == (16, 12) and data.images.shape[-2:] == (12, 16)
    torch.testing.assert_close(data.cameras.Ks[0], torch.tensor([[20.0, 0, 8], [0, 24, 6], [0, 0, 1]]))
    assert data.masks[0, 0, :, :8].sum() == 0 and bool(data.masks[0, 0, :, 8:].all())
    _write(tmp_path, meta, size=(16, 6))  # another aspect ratio: refused, as a mismatch always was
    with pytest.raises(InputError, match="16x6 pixels, the json's w x h says 8x6 \\(another aspect ratio\\)"):
        load_capture(tmp_path)


def _nan():
    return float("nan")


BAD = {  # name -> (change to the meta, the field the message must name)
    "missing image": (_meta(frame={"file_path": "absent.png"}), "file_path"),
    "no file_path": (_meta(frame={"file_path": None}), "file_path"),
    "missing fl_x": (_meta(fl_x=None), "fl_x"),
    "missing h": (_meta(h=None), "h"),
    "negative fl_y": (_meta(fl_y=-3.0), "fl_y"),
    "NaN cx": (_meta(cx=_nan()), "cx"),
    "string cy": (_meta(cy="middle"), "cy"),
    "fractional w": (_meta(w=7.5), "w"),
    "wrong image size": (_meta(w=9), "file_path"),
    "3x4 matrix": (_meta(frame={"transform_matrix": np.eye(4)[:3].tolist()}), "transform_matrix"),
    "4x3 matrix": (_meta(frame={"transform_matrix": np.eye(4)[:, :3].tolist()}), "transform_matrix"),
    "NaN matrix": (_meta(frame={"transform_matrix": [[_nan()] * 4] * 4}), "transform_matrix"),
    "singular matrix": (_meta(frame={"transform_matrix": np.diag([1.0, 0, 1, 1]).tolist()}), "transform_matrix"),
    "bad last row": (_meta(frame={"transform_matrix": np.ones((4, 4)).tolist()}), "transform_matrix"),
    "no matrix": (_meta(frame={"transform_matrix": None}), "transform_matrix"),
    "fisheye": (_meta(camera_model="OPENCV_FISHEYE"), "camera_model"),
    "equirectangular": (_meta(camera_model="EQUIRECTANGULAR"), "camera_model"),
    "k4": (_meta(k4=0.1), "k4"),
    "missing mask": (_meta(frame={"mask_path": "masks/a.png"}), "mask_path"),
    "no frames": (_meta(frames=[]), "frames"),
    "bad applied_transform": (_meta(applied_transform=[[1, 0, 0]]), "applied_transform"),
    "unknown test file": (_meta(test_filenames=["zzz.png"]), "test_filenames"),
    "huge integer w": (_meta(w=10 ** 400), "w"),
    "huge integer in matrix": (_meta(frame={"transform_matrix": [[10 ** 400] * 4] * 4}), "transform_matrix"),
    "fl_x beyond float32": (_meta(fl_x=1e300), "fl_x"),
    "field of view of 180 degrees": (_meta(fl_x=None, camera_angle_x=math.pi), "camera_angle_x"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_captures_fail_in_one_line_naming_the_file_and_field(tmp_path, name):
    meta, field = BAD[name]
    for frame in meta["frames"]:
        for key in [k for k, v in frame.items() if v is None]:
            del frame[key]
    path = _write(tmp_path, meta)
    with pytest.raises(InputError) as error:
        load_capture(tmp_path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and field in message


def test_unreadable_files_are_one_line(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_capture(tmp_path)
    (tmp_path / "transforms.json").write_text("{not json")
    with pytest.raises(InputError, match="not a readable JSON"):
        load_capture(tmp_path)
    (tmp_path / "a.png").write_text("not an image")
    (tmp_path / "transforms.json").write_text(json.dumps(_meta()))
    with pytest.raises(InputError, match="frames\\[0\\].file_path.*not a readable image"):
        load_capture(tmp_path)


def test_masks_and_alpha_are_read(tmp_path):
    (tmp_path / "masks").mkdir()
    mask = np.zeros((6, 8), np.uint8)
    mask[:, 4:] = 255
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    (tmp_path / "transforms.json").write_text(json.dumps(_meta(frame={"mask_path": "masks/a.png"})))
    data = load_capture(tmp_path)
    assert data.masks[0, 0].float().mean() == 0.5 and data.masks[0, 0, :, 4:].all()
    a = 128 / 255
    torch.testing.assert_close(data.alphas, torch.full((1, 1, 6, 8), a))
    torch.testing.assert_close(data.images[0, :, 0, 0], torch.tensor([1.0, 1 - a, 1 - a]))
    assert math.isclose(float(data.images[0, 0].min()), 1.0)
