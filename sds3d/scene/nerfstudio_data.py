"""Captures in the nerfstudio data format: `transforms.json` + images -> sds3d `Cameras` and images.

The format (as nerfstudio's `ns-process-data` writes it and its `nerfstudio_dataparser` reads it):

    {"camera_model": "OPENCV",                       # or PINHOLE / SIMPLE_PINHOLE; fisheye is refused
     "fl_x": 1072.0, "fl_y": 1068.0, "cx": 540.0, "cy": 960.0, "w": 1080, "h": 1920,
     "k1": 0.03, "k2": -0.01, "p1": 0.0, "p2": 0.0,  # optional OpenCV distortion
     "applied_transform": [[...], [...], [...]],     # optional 3x4: original (COLMAP) world -> this one
     "frames": [{"file_path": "images/frame_00001.png",      # relative to the json
                 "transform_matrix": [[...] x 4],            # 4x4 camera -> world, OpenGL axes
                 "mask_path": "masks/frame_00001.png"}]}     # optional: 0 = pixel ignored

Intrinsics are global or per frame (a frame's value wins). `transform_matrix` is camera-to-world with
OpenGL / Blender camera axes (x right, y up, z backwards: the camera looks along -z); sds3d's
`Cameras` hold world-to-camera matrices with OpenCV axes (x right, y down, z forwards), so

    viewmat = inverse(transform_matrix @ diag(1, -1, -1, 1)).

The world frame is the file's (nerfstudio scenes are +z up, as sds3d's). Frames are sorted by
file path, as nerfstudio does. Images with an alpha channel are composited over white and their
alpha kept; OpenCV radial-tangential distortion (k1, k2, k3, p1, p2) is removed by resampling each
image onto the undistorted pinhole camera with the same intrinsics.

Blender's scenes (nerf_synthetic's transforms_*.json) are read too: `camera_angle_x` (the horizontal
field of view in radians) in place of fl_x makes w and h the image's, fl_x = w / (2 tan(angle / 2)),
fl_y the same from `camera_angle_y` or equal to fl_x, and the principal point the image centre; a
`file_path` without a suffix names the first of IMAGE_SUFFIXES that exists.

Images stored smaller or larger than the json's w x h at its aspect ratio (nerfstudio's downscaled
`images_2/`, `images_4/` folders named in file_path, or images resized after capture) are read at
their own size with fl_x, cx scaled by their width's ratio and fl_y, cy by their height's, as
nerfstudio's `rescale_output_resolution` does; masks follow their image's size (nearest).

When nerfstudio is installed (`import nerfstudio` works; optional, not a dependency), its own
`Nerfstudio` dataparser reads the poses, intrinsics and file names (with its auto-orientation,
centring and scaling turned off, so the frame stays the file's), after the checks below; otherwise,
and for Blender's scenes, which its dataparser does not read, the small reader here does. Bad input
— a missing image, missing or non-positive intrinsics, a fisheye camera model, a transform that is
not 4x4 or not invertible, a NaN — is one `InputError` line naming the file and the field.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sds3d.cameras import Cameras
from sds3d.errors import InputError

PERSPECTIVE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE")
INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
DISTORTION = ("k1", "k2", "k3", "k4", "p1", "p2")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")  # tried for a file_path without one
FLOAT32_MAX = float(np.finfo(np.float32).max)
SIXTEEN_BIT_GREY = ("I", "I;16", "I;16B", "I;16L")  # Pillow's modes of a 16-bit greyscale PNG
OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


@dataclass
class CaptureData:
    """A capture read from `transforms.json`, frames sorted by file path."""

    cameras: Cameras  # N views, world -> camera (OpenCV)
    images: torch.Tensor  # [N, 3, H, W] float in [0, 1], composited over white where the file has alpha
    alphas: torch.Tensor | None  # [N, 1, H, W] in [0, 1] from the images' alpha channel, None if they have none
    masks: torch.Tensor | None  # [N, 1, H, W] bool, True = use the pixel (`mask_path`; pixels outside the
    #                             source image after undistortion are False), None if every pixel counts
    image_paths: list[Path]
    applied_transform: torch.Tensor | None  # [4, 4] original (COLMAP) world -> this file's world, if recorded
    reader: str  # "nerfstudio" (its dataparser) or "sds3d" (the reader here)
    splits: dict[str, list[int]]  # "train" / "val" / "test" -> frame indices, from <split>_filenames if given

    def __len__(self) -> int:
        return len(self.image_paths)

    def subset(self, index: list[int]) -> "CaptureData":
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return CaptureData(self.cameras[index], self.images[index], pick(self.alphas), pick(self.masks),
                           [self.image_paths[i] for i in index], self.applied_transform, self.reader, {})


def transforms_path(path) -> Path:
    """A capture folder or its json -> the json's path; InputError when there is none."""
    path = Path(path)
    json_path = path / "transforms.json" if path.is_dir() else path
    if not json_path.is_file():
        raise InputError(f"{json_path}: no such file (a nerfstudio capture is a folder with transforms.json; "
                         f"give a Blender scene's transforms_train.json itself)")
    return json_path


def _number(json_path: Path, where: str, name: str, value, positive: bool = False) -> float:
    """A JSON number that float32 holds (NaN, infinity and huge integers are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) <= FLOAT32_MAX:
        raise InputError(f"{json_path}: {where}{name} must be a finite number, got {json.dumps(value)[:40]}")
    if positive and value <= 0:
        raise InputError(f"{json_path}: {where}{name} must be positive, got {value}")
    return float(value)


def _matrix(json_path: Path, where: str, name: str, value, rows: tuple[int, ...]) -> torch.Tensor:
    """A JSON matrix with one of `rows` rows of 4 finite numbers -> float64 tensor."""
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{json_path}: {where}{name} must be a matrix of numbers") from None
    if matrix.ndim != 2 or matrix.shape[1] != 4 or matrix.shape[0] not in rows:
        shape = "x".join(map(str, matrix.shape)) or "a number"
        wanted = " or ".join(f"{r}x4" for r in rows)
        raise InputError(f"{json_path}: {where}{name} must be {wanted}, got {shape}")
    if not np.isfinite(matrix).all():
        raise InputError(f"{json_path}: {where}{name} holds NaN or infinite values")
    return torch.from_numpy(matrix)


@dataclass
class _Frame:
    image: Path
    mask: Path | None
    c2w: torch.Tensor  # [4, 4] float64, OpenGL axes
    intrinsics: dict[str, float]  # fl_x fl_y cx cy w h k1 k2 k3 k4 p1 p2
    blender: bool = False  # camera_angle_x or a file_path without suffix: nerfstudio's dataparser cannot read it


def _image_file(folder: Path, name: str) -> Path:
    """`folder / name`; when that is no file, the first `name` + one of IMAGE_SUFFIXES that is."""
    path = folder / name
    if path.is_file():
        return path
    return next((c for c in (Path(f"{path}{suffix}") for suffix in IMAGE_SUFFIXES) if c.is_file()), path)


def _image_size(json_path: Path, path: Path, field: str) -> tuple[int, int]:
    """(width, height) of an image, from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise InputError(f"{json_path}: {field}: {path} is not a readable image "
                         f"({str(error).splitlines()[0][:80]})") from None


def _blender_intrinsics(json_path: Path, where: str, image: Path, values: dict, angle_x, angle_y) -> dict:
    """`values` (the intrinsics, None where not given) completed from Blender's fields of view
    (radians): w and h from the image, fl_x from `angle_x`, fl_y from `angle_y` or fl_x, the
    principal point at the centre."""
    if values["w"] is None or values["h"] is None:
        width, height = _image_size(json_path, image, f"{where}file_path")
        values = {"w": width, "h": height} | {k: v for k, v in values.items() if v is not None}
    width = _number(json_path, where, "w", values["w"], positive=True)
    height = _number(json_path, where, "h", values["h"], positive=True)
    focal = {}
    for name, angle, size in (("camera_angle_x", angle_x, width), ("camera_angle_y", angle_y, height)):
        if angle is not None:
            angle = _number(json_path, where, name, angle, positive=True)
            if angle >= math.pi:
                raise InputError(f"{json_path}: {where}{name} = {angle} is no field of view (radians, below pi)")
            focal[name] = size / (2 * math.tan(angle / 2))
    filled = {"fl_x": focal["camera_angle_x"], "fl_y": focal.get("camera_angle_y", focal["camera_angle_x"]),
              "cx": width / 2, "cy": height / 2}
    return filled | {k: v for k, v in values.items() if v is not None}


def read_transforms(json_path: Path) -> tuple[list[_Frame], torch.Tensor | None, dict[str, list[int]]]:
    """Validated frames of a transforms.json (sorted by file path), its applied_transform [4, 4] and
    its splits (nerfstudio's `train_filenames`, `val_filenames`, `test_filenames` -> frame indices)."""
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{json_path}: not a readable JSON file ({str(error).splitlines()[0][:100]})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{json_path}: must hold a JSON object with 'frames'")
    model = meta.get("camera_model", "OPENCV")
    if model not in PERSPECTIVE_MODELS:
        raise InputError(f"{json_path}: camera_model {model!r} is not supported; sds3d's rasterizer needs a "
                         f"perspective camera ({', '.join(PERSPECTIVE_MODELS)})")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{json_path}: 'frames' must be a non-empty list")
    applied = None
    if "applied_transform" in meta:
        applied = _matrix(json_path, "", "applied_transform", meta["applied_transform"], (3, 4))
        applied = torch.cat([applied[:3], torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    parsed = []
    for i, frame in enumerate(frames):
        where = f"frames[{i}]."
        if not isinstance(frame, dict):
            raise InputError(f"{json_path}: frames[{i}] must be a JSON object")
        if not isinstance(frame.get("file_path"), str):
            raise InputError(f"{json_path}: {where}file_path is missing (the image, relative to the json)")
        image = _image_file(json_path.parent, frame["file_path"])
        if not image.is_file():
            raise InputError(f"{json_path}: {where}file_path: image {image} does not exist")
        mask = None
        if "mask_path" in frame:
            if not isinstance(frame["mask_path"], str) or not (json_path.parent / frame["mask_path"]).is_file():
                raise InputError(f"{json_path}: {where}mask_path: mask {frame['mask_path']!r} does not exist")
            mask = json_path.parent / frame["mask_path"]
        if "transform_matrix" not in frame:
            raise InputError(f"{json_path}: {where}transform_matrix is missing")
        c2w = _matrix(json_path, where, "transform_matrix", frame["transform_matrix"], (4,))
        if not torch.allclose(c2w[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-6):
            raise InputError(f"{json_path}: {where}transform_matrix's last row must be [0, 0, 0, 1]")
        if abs(float(torch.linalg.det(c2w[:3, :3]))) < 1e-9:
            raise InputError(f"{json_path}: {where}transform_matrix is singular (its 3x3 part has no inverse)")
        values = {name: frame.get(name, meta.get(name)) for name in INTRINSICS + DISTORTION}
        angle_x = frame.get("camera_angle_x", meta.get("camera_angle_x"))
        from_angle = values["fl_x"] is None and angle_x is not None
        if from_angle:
            values |= _blender_intrinsics(json_path, where, image, values, angle_x,
                                          frame.get("camera_angle_y", meta.get("camera_angle_y")))
        intrinsics = {}
        for name in INTRINSICS + DISTORTION:
            value = values[name]
            if value is None and name in DISTORTION:
                value = 0.0
            if value is None:
                raise InputError(f"{json_path}: {where}{name} is missing (give it globally or per frame)")
            source = where if name in frame else ""
            intrinsics[name] = _number(json_path, source, name, value, positive=name in ("fl_x", "fl_y", "w", "h"))
        for name in ("w", "h"):
            if intrinsics[name] != int(intrinsics[name]):
                raise InputError(f"{json_path}: {name} must be a whole number of pixels, got {intrinsics[name]}")
        if intrinsics["k4"]:
            raise InputError(f"{json_path}: k4 = {intrinsics['k4']} is a fisheye coefficient; camera_model "
                             f"{model} takes k1, k2, k3, p1, p2")
        blender = from_angle or image != json_path.parent / frame["file_path"]
        parsed.append(_Frame(image, mask, c2w, intrinsics, blender))
    sizes = {(f.intrinsics["w"], f.intrinsics["h"]) for f in parsed}
    if len(sizes) > 1:
        raise InputError(f"{json_path}: frames have {len(sizes)} different image sizes (w, h); sds3d needs one")
    order = sorted(range(len(parsed)), key=lambda i: str(parsed[i].image))
    parsed = [parsed[i] for i in order]
    index = {f.image.resolve(): i for i, f in enumerate(parsed)}
    splits = {}
    for split in ("train", "val", "test"):
        names = meta.get(f"{split}_filenames")
        if names is None:
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"{json_path}: {split}_filenames must be a list of file paths")
        unknown = [n for n in names if _image_file(json_path.parent, n).resolve() not in index]
        if unknown:
            raise InputError(f"{json_path}: {split}_filenames names {unknown[0]!r}, which no frame's file_path is")
        splits[split] = sorted(index[_image_file(json_path.parent, n).resolve()] for n in names)
    return parsed, applied, splits


def _frames_from_nerfstudio(json_path: Path, frames: list[_Frame]) -> list[_Frame]:
    """The same frames as nerfstudio's own dataparser reads them (poses kept in the file's frame)."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    config = NerfstudioDataParserConfig(data=json_path, orientation_method="none", center_method="none",
                                        auto_scale_poses=False, eval_mode="all", downscale_factor=1)
    outputs = config.setup().get_dataparser_outputs(split="train")
    cameras = outputs.cameras
    masks = outputs.mask_filenames or [None] * len(outputs.image_filenames)
    read = []
    for i, (image, mask) in enumerate(zip(outputs.image_filenames, masks)):
        c2w = torch.eye(4, dtype=torch.float64)
        c2w[:3] = cameras.camera_to_worlds[i].double()
        k1, k2, k3, k4, p1, p2 = (float(v) for v in cameras.distortion_params[i])
        intrinsics = {"fl_x": float(cameras.fx[i]), "fl_y": float(cameras.fy[i]), "cx": float(cameras.cx[i]),
                      "cy": float(cameras.cy[i]), "w": float(cameras.width[i]), "h": float(cameras.height[i]),
                      "k1": k1, "k2": k2, "k3": k3, "k4": k4, "p1": p1, "p2": p2}
        read.append(_Frame(Path(image), None if mask is None else Path(mask), c2w, intrinsics))
    if len(read) != len(frames):
        raise InputError(f"{json_path}: nerfstudio's dataparser read {len(read)} frames, the file lists {len(frames)}")
    return read


def nerfstudio_available() -> bool:
    """True when nerfstudio's dataparser imports (nerfstudio installed and working)."""
    if importlib.util.find_spec("nerfstudio") is None:
        return False
    try:
        importlib.import_module("nerfstudio.data.dataparsers.nerfstudio_dataparser")
    except Exception:  # an install whose own dependencies are broken: the built-in reader is used
        return False
    return True


def viewmats_from_nerfstudio(c2w: torch.Tensor) -> torch.Tensor:
    """[N, 4, 4] camera -> world with OpenGL axes (nerfstudio) -> [N, 4, 4] world -> camera with
    OpenCV axes (sds3d `Cameras`), float32 (computed in float64)."""
    return torch.linalg.inv(c2w.double() @ OPENGL_TO_OPENCV).float()


def nerfstudio_from_viewmats(viewmats: torch.Tensor) -> torch.Tensor:
    """Inverse of `viewmats_from_nerfstudio`: [N, 4, 4] OpenCV world -> camera -> OpenGL camera -> world."""
    return torch.linalg.inv(viewmats.double()) @ OPENGL_TO_OPENCV


def _same_aspect(size: tuple[int, int], width: float, height: float) -> bool:
    """Whether an image of `size` (w, h) is `width` x `height` rescaled: both sides differ, in the same
    ratio to within a pixel of rounding."""
    if size[0] == width or size[1] == height:
        return False
    return abs(size[0] * height / width - size[1]) <= 1 and abs(size[1] * width / height - size[0]) <= 1


def _at_image_size(json_path: Path, frames: list[_Frame]) -> list[_Frame]:
    """`frames` with the intrinsics of any frame whose image file is its w x h uniformly rescaled
    (nerfstudio's downscaled `images_2/`, or images resized after capture) scaled to the file's
    pixels; InputError (one line) for a file of another aspect ratio, or when sizes then differ."""
    rescaled = []
    for i, frame in enumerate(frames):
        k = frame.intrinsics
        size = _image_size(json_path, frame.image, f"frames[{i}].file_path")
        if size != (k["w"], k["h"]):
            if not _same_aspect(size, k["w"], k["h"]):
                raise InputError(f"{json_path}: frames[{i}].file_path: {frame.image} is {size[0]}x{size[1]} pixels, "
                                 f"the json's w x h says {k['w']:g}x{k['h']:g} (another aspect ratio)")
            sx, sy = size[0] / k["w"], size[1] / k["h"]
            k = {**k, "fl_x": k["fl_x"] * sx, "cx": k["cx"] * sx, "w": float(size[0]),
                 "fl_y": k["fl_y"] * sy, "cy": k["cy"] * sy, "h": float(size[1])}
        rescaled.append(replace(frame, intrinsics=k))
    sizes = {(f.intrinsics["w"], f.intrinsics["h"]) for f in rescaled}
    if len(sizes) > 1:
        raise InputError(f"{json_path}: the frames' images have {len(sizes)} different sizes; sds3d needs one")
    return rescaled


def _read_image(json_path: Path, path: Path, field: str, width: int, height: int) -> np.ndarray:
    """float32 [H, W, C] in [0, 1] (C = 1, 3 or 4) of `width` x `height` pixels; a mask (`field`
    "...mask_path") of the same aspect ratio is resized to it (nearest), any other size refused."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if field.endswith("mask_path") and _same_aspect(image.size, width, height):
                image = image.resize((width, height), Image.Resampling.NEAREST)
            if image.mode in SIXTEEN_BIT_GREY:
                array = np.asarray(image, dtype=np.float32) / 65535.0
            else:
                if image.mode not in ("L", "RGB", "RGBA"):
                    image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
                array = np.asarray(image, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise InputError(f"{json_path}: {field}: {path} is not a readable image "
                         f"({str(error).splitlines()[0][:80]})") from None
    array = array[..., None] if array.ndim == 2 else array
    if array.shape[:2] != (height, width):
        raise InputError(f"{json_path}: {field}: {path} is {array.shape[1]}x{array.shape[0]} pixels, the json's "
                         f"w x h says {width}x{height}")
    return array


def undistort(image: torch.Tensor, K: torch.Tensor, k1: float, k2: float, k3: float, p1: float,
              p2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """image [C, H, W] seen through OpenCV's radial-tangential model -> (the image the pinhole
    camera K [3, 3] sees [C, H, W], valid [1, H, W] bool: pixels whose source lies inside the image).
    Each output pixel's normalised coordinates are distorted (closed form) and sampled bilinearly."""
    _, height, width = image.shape
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                          torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    fx, fy, cx, cy = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    x, y = (u - cx) / fx, (v - cy) / fy
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    grid = torch.stack([(xd * fx + cx) / width * 2 - 1, (yd * fy + cy) / height * 2 - 1], -1).float()
    sampled = F.grid_sample(image[None], grid[None], mode="bilinear", padding_mode="border", align_corners=False)[0]
    valid = (grid.abs() <= 1).all(-1)[None]
    return sampled, valid


def load_capture(path, use_nerfstudio: bool | None = None) -> CaptureData:
    """A nerfstudio capture (its folder or transforms.json) -> `CaptureData`. `use_nerfstudio`: read
    poses and intrinsics with nerfstudio's dataparser (None: when it is installed), unless the file is
    Blender-style, which only the reader here reads."""
    json_path = transforms_path(path)
    frames, applied, splits = read_transforms(json_path)
    if use_nerfstudio is None:
        use_nerfstudio = nerfstudio_available()
    use_nerfstudio = use_nerfstudio and not any(f.blender for f in frames)
    if use_nerfstudio:
        frames = _frames_from_nerfstudio(json_path, frames)
    frames = _at_image_size(json_path, frames)
    width, height = int(frames[0].intrinsics["w"]), int(frames[0].intrinsics["h"])
    Ks = torch.zeros(len(frames), 3, 3)
    Ks[:, 0, 0] = torch.tensor([f.intrinsics["fl_x"] for f in frames])
    Ks[:, 1, 1] = torch.tensor([f.intrinsics["fl_y"] for f in frames])
    Ks[:, 0, 2] = torch.tensor([f.intrinsics["cx"] for f in frames])
    Ks[:, 1, 2] = torch.tensor([f.intrinsics["cy"] for f in frames])
    Ks[:, 2, 2] = 1
    viewmats = viewmats_from_nerfstudio(torch.stack([f.c2w for f in frames]))
    images, alphas, masks = [], [], []
    any_alpha = any_mask = False
    for i, frame in enumerate(frames):
        array = _read_image(json_path, frame.image, f"frames[{i}].file_path", width, height)
        rgb = torch.from_numpy(np.ascontiguousarray(array[..., :3] if array.shape[-1] >= 3 else array.repeat(3, -1)))
        has_alpha = array.shape[-1] == 4
        alpha = torch.from_numpy(np.ascontiguousarray(array[..., 3:])) if has_alpha else torch.ones(height, width, 1)
        any_alpha |= has_alpha
        mask = torch.ones(1, height, width, dtype=torch.bool)
        if frame.mask is not None:
            mask_array = _read_image(json_path, frame.mask, f"frames[{i}].mask_path", width, height)
            mask = torch.from_numpy(mask_array[..., :1] > 0.5).permute(2, 0, 1)
            any_mask = True
        stacked = torch.cat([(rgb * alpha + (1 - alpha)).permute(2, 0, 1), alpha.permute(2, 0, 1)])  # over white
        k = frame.intrinsics
        if any(k[name] for name in ("k1", "k2", "k3", "p1", "p2")):
            stacked, valid = undistort(torch.cat([stacked, mask.float()]), Ks[i], k["k1"], k["k2"], k["k3"],
                                       k["p1"], k["p2"])
            mask = (stacked[4:] > 0.5) & valid
            stacked = stacked[:4]
            any_mask = True
        images.append(stacked[:3])
        alphas.append(stacked[3:])
        masks.append(mask)
    cameras = Cameras(viewmats=viewmats, Ks=Ks, width=width, height=height)
    return CaptureData(cameras=cameras, images=torch.stack(images).clamp(0, 1),
                       alphas=torch.stack(alphas).clamp(0, 1) if any_alpha else None,
                       masks=torch.stack(masks) if any_mask else None,
                       image_paths=[f.image for f in frames], applied_transform=applied,
                       reader="nerfstudio" if use_nerfstudio else "sds3d", splits=splits)


__all__ = ["CaptureData", "load_capture", "nerfstudio_available", "read_transforms", "transforms_path",
           "viewmats_from_nerfstudio",
           "nerfstudio_from_viewmats", "undistort", "PERSPECTIVE_MODELS"]
