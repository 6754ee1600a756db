"""A micro-world object rendered as a capture in the nerfstudio data format (test data for
`sds3d fit` and the scene readers):

    python -m sds3d.world.capture OUT --kind mug --color red --views 48 [--holdout 8] [--resolution 128]

writes OUT/transforms.json and OUT/images/frame_XXXXX.png. The object is the ground-truth mesh of
`sds3d.world.make_object`, drawn by the mesh rasterizer with the micro-world dataset's shading
(Lambertian, ambient 0.35 + diffuse 0.65, 2x2 supersampling) under one light fixed in the world, as
in a real capture. Images are RGBA PNGs (straight alpha) or, with `--background white`, RGB over
white.

Cameras: `views` orbit cameras looking at the origin from radius 2.5 with a 40 degree vertical field
of view, on a spiral (azimuth stepping by the golden angle, elevation rising from -10 to 60
degrees); transform_matrix is their camera-to-world matrix in nerfstudio's OpenGL convention
(`sds3d.scene.nerfstudio_data.nerfstudio_from_viewmats`), written with full float64 precision so that
the reader gives back the same cameras. `--holdout K` lists K evenly spaced views under
`test_filenames` and the others under `train_filenames` (nerfstudio's split keys).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from sds3d.cameras import Cameras, orbit_cameras
from sds3d.errors import InputError, first_line

LIGHT = (0.5, 0.3, 0.81)  # world direction towards the light: above, front-left
GOLDEN_ANGLE = 180.0 * (3.0 - math.sqrt(5.0))
RADIUS, FOVY = 2.5, 40.0
ELEVATION_RANGE = (-10.0, 60.0)


def capture_cameras(views: int, resolution: int) -> Cameras:
    """`views` orbit cameras on a spiral around the origin (see the module docstring)."""
    index = torch.arange(views, dtype=torch.float64)
    azimuth = (index * GOLDEN_ANGLE + 180.0) % 360.0 - 180.0
    low, high = ELEVATION_RANGE
    elevation = low + (high - low) * (index + 0.5) / views
    return orbit_cameras(elevation.float(), azimuth.float(), RADIUS, FOVY, resolution)


def holdout_indices(views: int, holdout: int) -> list[int]:
    """`holdout` evenly spaced view indices out of `views`."""
    return sorted({int(i * views / holdout) for i in range(holdout)}) if holdout else []


def render_capture(kind: str, color: str, cameras: Cameras, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (straight RGB [N, H, W, 3], alpha [N, H, W, 1]) in [0, 1] of the object from `cameras`."""
    from sds3d.cuda.mesh_rasterizer import render_trimesh
    from sds3d.world.dataset import AMBIENT, DIFFUSE, _mesh

    mesh = _mesh(kind, color)
    light = torch.nn.functional.normalize(torch.tensor(LIGHT), dim=0)
    rgbs, alphas = [], []
    for start in range(0, len(cameras), batch):
        chunk = cameras[list(range(start, min(start + batch, len(cameras))))]
        out = render_trimesh(mesh, chunk, light_dirs=light, ambient=AMBIENT, diffuse=DIFFUSE,
                             background=(0.0, 0.0, 0.0), antialias=True)  # premultiplied colour
        alpha = out.alpha.clamp(0, 1)
        rgbs.append(torch.where(alpha > 0, out.rgb / alpha.clamp_min(1e-8), torch.zeros_like(out.rgb)).clamp(0, 1))
        alphas.append(alpha)
    return torch.cat(rgbs), torch.cat(alphas)


def write_capture(out, kind: str = "mug", color: str = "red", views: int = 48, resolution: int = 128,
                  holdout: int = 0, background: str = "alpha") -> Path:
    """Renders the capture into the new folder `out` (see the module docstring) and returns the path of
    its transforms.json. Everything is written into a temporary sibling folder first and renamed, so
    `out` is either complete or absent. InputError for bad arguments or an `out` that is not empty."""
    from PIL import Image

    from sds3d.scene.nerfstudio_data import nerfstudio_from_viewmats
    from sds3d.world import COLORS, KINDS

    out = Path(out)
    if kind not in KINDS:
        raise InputError(f"unknown kind {kind!r}; choose one of: {', '.join(sorted(KINDS))}")
    if color not in COLORS:
        raise InputError(f"unknown colour {color!r}; choose one of: {', '.join(COLORS)}")
    if views < 1 or not 8 <= resolution <= 2048 or not 0 <= holdout < views:
        raise InputError(f"need views >= 1, resolution 8-2048 and 0 <= holdout < views; got views {views}, "
                         f"resolution {resolution}, holdout {holdout}")
    if background not in ("alpha", "white"):
        raise InputError(f"background must be 'alpha' or 'white', got {background!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists and is not an empty folder; choose a new one")

    cameras = capture_cameras(views, resolution)
    rgb, alpha = render_capture(kind, color, cameras)
    c2w = nerfstudio_from_viewmats(cameras.viewmats)
    K = cameras.Ks[0]
    names = [f"images/frame_{i:05d}.png" for i in range(views)]
    test = holdout_indices(views, holdout)
    meta = {"camera_model": "PINHOLE", "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]),
            "cy": float(K[1, 2]), "w": resolution, "h": resolution,
            "sds3d_capture": {"kind": kind, "color": color, "radius": RADIUS, "fovy": FOVY, "light": list(LIGHT)},
            "frames": [{"file_path": name, "transform_matrix": c2w[i].tolist(),
                        "elevation": float(cameras.elevation[i]), "azimuth": float(cameras.azimuth[i])}
                       for i, name in enumerate(names)]}
    if test:
        meta["train_filenames"] = [name for i, name in enumerate(names) if i not in test]
        meta["test_filenames"] = [names[i] for i in test]

    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / "images").mkdir(parents=True)
        for i, name in enumerate(names):
            if background == "white":
                pixels = rgb[i] * alpha[i] + (1 - alpha[i])
            else:
                pixels = torch.cat([rgb[i], alpha[i]], -1)
            array = (pixels.numpy() * 255 + 0.5).astype(np.uint8)
            Image.fromarray(array, "RGBA" if background == "alpha" else "RGB").save(staging / name)
        (staging / "transforms.json").write_text(json.dumps(meta, indent=1))
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "transforms.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sds3d.world.capture", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="new folder for transforms.json and images/")
    parser.add_argument("--kind", default="mug")
    parser.add_argument("--color", default="red")
    parser.add_argument("--views", type=int, default=48)
    parser.add_argument("--resolution", type=int, default=128, help="image width and height in pixels")
    parser.add_argument("--holdout", type=int, default=0, help="views listed as test_filenames (evenly spaced)")
    parser.add_argument("--background", choices=("alpha", "white"), default="alpha",
                        help="RGBA PNGs, or RGB over white")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    try:
        path = write_capture(args.out, args.kind, args.color, args.views, args.resolution, args.holdout,
                             args.background)
    except InputError as error:
        print(f"sds3d: error: {first_line(error)}", file=sys.stderr)
        return 2
    print(f"wrote {path} and {args.views} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
