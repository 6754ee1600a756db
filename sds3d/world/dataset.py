"""Rendered training data of the micro-world: 32x32 views of every (kind, colour) with labels.

Each sample is one object seen by one random orbit camera under one random directional light, over
a white background:

- cameras as `sds3d.cameras.CameraSampler` draws them for score distillation (azimuth uniform,
  radius 2.2-2.8, fovy 35-45), except that the elevation also covers overhead views: with
  probability `overhead_prob` (0.15) it is uniform in [60, 80] degrees (the "overhead" bin), else
  uniform in [-10, 60];
- a directional light in the camera's upper hemisphere (from above the camera's horizon and from
  the viewer's side), Lambertian shading with the mesh rasterizer's ambient 0.35 + diffuse 0.65
  (the shading range the colour palette is designed for);
- rendered at 64x64 with the rasterizer's 2x2 supersampling (so 128x128 samples) and area-averaged
  down to 32x32, i.e. 4x4 samples per output pixel. Score distillation renders should be reduced
  to 32x32 the same way (area averaging), so they look like this data.

Labels: kind, colour and the view bin of `sds3d.views.view_bins`. Captions are not stored; they are
drawn at training time (`draw_captions`) so every epoch sees new paraphrases.

`render_dataset(n, seed)` is deterministic for a seed; `load_or_render(name, n, seed)` caches the
result as a .pt file under the data directory ($SDS3D_DATA_DIR, default ~/.cache/sds3d/world).
The seeds used by the project are fixed in `SEEDS` so prior training, evaluator training and
evaluator testing never share renders.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cameras import orbit_cameras
from ..views import VIEW_BINS, view_bins

# Seeds of the project's datasets; never reuse one for another purpose.
SEEDS = {"prior": 1000, "evaluator_train": 2000, "evaluator_val": 2500, "evaluator_test": 3000,
         "benchmark": 4000, "tests": 5000}

RESOLUTION = 32
RENDER_RESOLUTION = 64  # camera size; the rasterizer supersamples 2x on top (antialias=True)
ELEVATION_RANGE = (-10.0, 60.0)
OVERHEAD_RANGE = (60.0, 80.0)
OVERHEAD_PROB = 0.15
AZIMUTH_RANGE = (-180.0, 180.0)
RADIUS_RANGE = (2.2, 2.8)
FOVY_RANGE = (35.0, 45.0)
AMBIENT, DIFFUSE = 0.35, 0.65
CAPTION_VIEW_PROB = 0.5
FORMAT_VERSION = 3


def data_dir() -> Path:
    """Where rendered datasets are cached (not part of the repository)."""
    return Path(os.environ.get("SDS3D_DATA_DIR", Path.home() / ".cache" / "sds3d" / "world")).expanduser()


def labels() -> tuple[list[str], list[str], list[str]]:
    """(kind names, colour names, view bins) in the order used by the integer labels."""
    from . import COLORS, KINDS

    return list(KINDS), list(COLORS), list(VIEW_BINS)


@dataclass
class RenderedViews:
    """Renders of micro-world objects with their (kind, colour) and orbit camera; names are in
    `kinds`, `colors`. Subclasses add their own fields and set `format_version` (saved in `state`)."""

    images: torch.Tensor  # [N, 3, R, R] uint8, over white
    kind: torch.Tensor  # [N] int64 index into `kinds`
    color: torch.Tensor  # [N] int64 index into `colors`
    elevation: torch.Tensor  # [N] degrees
    azimuth: torch.Tensor  # [N] degrees in [-180, 180)
    radius: torch.Tensor  # [N] world units
    fovy: torch.Tensor  # [N] degrees
    kinds: list[str]
    colors: list[str]
    seed: int

    format_version = 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def state(self) -> dict:
        """The fields and "version" (`format_version`), for torch.save."""
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"version": self.format_version}

    @classmethod
    def from_state(cls, state: dict):
        return cls(**{k: v for k, v in state.items() if k != "version"})


@dataclass
class WorldDataset(RenderedViews):
    """Renders (32x32; `float_images` for [0, 1]) with their kind, colour and view bin (`views`)."""

    view: torch.Tensor  # [N] int64 index into `views`
    views: list[str]

    format_version = FORMAT_VERSION

    def float_images(self, index=None) -> torch.Tensor:
        images = self.images if index is None else self.images[index]
        return images.float() / 255.0

    def sample(self, i: int) -> dict:
        """One sample with names: image [3, 32, 32] float in [0, 1], kind, color, view."""
        return {"image": self.float_images(i), "kind": self.kinds[int(self.kind[i])],
                "color": self.colors[int(self.color[i])], "view": self.views[int(self.view[i])]}


def sample_views(n: int, rng: np.random.Generator, overhead_prob: float = OVERHEAD_PROB) -> dict[str, np.ndarray]:
    """Camera parameters and light directions (camera frame) for n samples."""
    overhead = rng.random(n) < overhead_prob
    elevation = np.where(overhead, rng.uniform(*OVERHEAD_RANGE, n), rng.uniform(*ELEVATION_RANGE, n))
    azimuth = rng.uniform(*AZIMUTH_RANGE, n)
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    radius = rng.uniform(*RADIUS_RANGE, n)
    fovy = rng.uniform(*FOVY_RANGE, n)
    # Light direction in camera coordinates (x right, y up, z towards the viewer): uniform on the
    # sphere, folded into the upper hemisphere (y >= 0) and the viewer's side (z >= 0.25).
    light = rng.normal(size=(n, 3))
    light /= np.linalg.norm(light, axis=1, keepdims=True)
    light[:, 1] = np.abs(light[:, 1])
    light[:, 2] = np.abs(light[:, 2]) + 0.25
    light /= np.linalg.norm(light, axis=1, keepdims=True)
    return {"elevation": elevation, "azimuth": azimuth, "radius": radius, "fovy": fovy, "light": light}


def area_downsample(images: torch.Tensor, size: int = RESOLUTION) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, size, size] by area averaging (how renders become prior inputs)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="area")


_MESHES: dict[tuple[str, str], object] = {}


def _mesh(kind: str, color: str):
    from . import make_object

    key = (kind, color)
    if key not in _MESHES:
        _MESHES[key] = make_object(kind, color).mesh
    return _MESHES[key]


def render_views(kind: str, color: str, elevation, azimuth, radius, fovy, light_cam=None,
                 resolution: int = RESOLUTION, render_resolution: int = RENDER_RESOLUTION) -> torch.Tensor:
    """Render one object from B orbit cameras -> [B, 3, resolution, resolution] float in [0, 1].

    light_cam [B, 3]: light directions in camera coordinates (x right, y up, z towards the viewer);
    None = a headlight from slightly above."""
    from sds3d.cuda.mesh_rasterizer import render_trimesh

    cameras = orbit_cameras(elevation, azimuth, radius, fovy, render_resolution)
    B = len(cameras)
    if light_cam is None:
        light_cam = np.tile([0.0, 0.5, 1.0], (B, 1))
    light_cam = torch.as_tensor(np.asarray(light_cam), dtype=torch.float32).reshape(B, 3)
    # OpenCV rows of the rotation are the camera axes in world coordinates: right, down, forward.
    rotation = cameras.viewmats[:, :3, :3]
    right, down, forward = rotation[:, 0], rotation[:, 1], rotation[:, 2]
    light = light_cam[:, :1] * right - light_cam[:, 1:2] * down - light_cam[:, 2:3] * forward
    light = F.normalize(light, dim=-1)
    out = render_trimesh(_mesh(kind, color), cameras, light_dirs=light, ambient=AMBIENT, diffuse=DIFFUSE,
                         background=(1.0, 1.0, 1.0), antialias=True)
    images = out.rgb.permute(0, 3, 1, 2).clamp(0, 1)
    return area_downsample(images, resolution)


def balanced_pairs(n: int, rng: np.random.Generator, kinds: list[str], colors: list[str], all_kinds: list[str],
                   all_colors: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """n (kind, colour) index pairs (int64 [n] each, indices into `all_kinds` / `all_colors`) over
    `kinds` x `colors`, balanced: every pair floor(n / pairs) or one more times, in a random order."""
    pairs = [(all_kinds.index(k), all_colors.index(c)) for k in kinds for c in colors]
    P = len(pairs)
    extra = rng.choice(P, n % P, replace=False)  # the remainder: distinct random pairs
    order = rng.permutation(np.concatenate([np.tile(np.arange(P), n // P), extra]).astype(np.int64))
    return (np.array([pairs[i][0] for i in order], dtype=np.int64),
            np.array([pairs[i][1] for i in order], dtype=np.int64))


def render_by_pair(kind_idx: np.ndarray, color_idx: np.ndarray, render, chunk: int, desc: str,
                   progress: bool) -> None:
    """Calls `render(k, c, idx)` for the sample indices `idx` (int array, at most `chunk`) of each
    (kind, colour) pair in turn, so that one mesh serves a chunk; a tqdm bar named `desc` if `progress`."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (k, c) in enumerate(zip(kind_idx, color_idx)):
        groups.setdefault((int(k), int(c)), []).append(i)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(kind_idx), desc=desc, unit="img")
    for (k, c), members in sorted(groups.items()):
        for start in range(0, len(members), chunk):
            idx = np.array(members[start:start + chunk])
            render(k, c, idx)
            if bar is not None:
                bar.update(len(idx))
    if bar is not None:
        bar.close()


def render_dataset(n: int, seed: int, resolution: int = RESOLUTION, kinds: list[str] | None = None,
                   colors: list[str] | None = None, overhead_prob: float = OVERHEAD_PROB,
                   progress: bool = False, chunk: int = 64) -> WorldDataset:
    """n renders, deterministic for `seed`. (kind, colour) pairs are balanced: every pair appears
    floor(n / pairs) or one more times, in a seeded random order."""
    all_kinds, all_colors, views = labels()
    kinds = all_kinds if kinds is None else list(kinds)
    colors = all_colors if colors is None else list(colors)
    rng = np.random.default_rng(seed)
    kind_idx, color_idx = balanced_pairs(n, rng, kinds, colors, all_kinds, all_colors)
    params = sample_views(n, rng, overhead_prob)
    view_names = view_bins(torch.as_tensor(params["elevation"]), torch.as_tensor(params["azimuth"]))
    view_idx = np.array([views.index(v) for v in view_names], dtype=np.int64)

    images = torch.empty(n, 3, resolution, resolution, dtype=torch.uint8)

    def render(k: int, c: int, idx: np.ndarray) -> None:
        rgb = render_views(all_kinds[k], all_colors[c], params["elevation"][idx], params["azimuth"][idx],
                           params["radius"][idx], params["fovy"][idx], params["light"][idx], resolution)
        images[torch.as_tensor(idx)] = (rgb * 255.0).round().to(torch.uint8)

    render_by_pair(kind_idx, color_idx, render, chunk, f"render seed {seed}", progress)
    return WorldDataset(images=images, kind=torch.as_tensor(kind_idx), color=torch.as_tensor(color_idx),
                        view=torch.as_tensor(view_idx),
                        elevation=torch.as_tensor(params["elevation"], dtype=torch.float32),
                        azimuth=torch.as_tensor(params["azimuth"], dtype=torch.float32),
                        radius=torch.as_tensor(params["radius"], dtype=torch.float32),
                        fovy=torch.as_tensor(params["fovy"], dtype=torch.float32),
                        kinds=all_kinds, colors=all_colors, views=views, seed=seed)


def load_or_render(name: str, n: int, seed: int, directory: str | Path | None = None,
                   progress: bool = True) -> WorldDataset:
    """The cached dataset `<data_dir>/<name>-n<n>-s<seed>.pt`, rendered (and saved atomically) if
    absent or stale (catalogue changed)."""
    directory = Path(directory) if directory is not None else data_dir()
    path = directory / f"{name}-n{n}-s{seed}-r{RESOLUTION}-v{FORMAT_VERSION}.pt"
    kinds, colors, views = labels()
    if path.exists():
        state = torch.load(path, weights_only=True)
        if state.get("kinds") == kinds and state.get("colors") == colors and state.get("views") == views:
            return WorldDataset.from_state(state)
    t0 = time.time()
    data = render_dataset(n, seed, progress=progress)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(data.state(), tmp)
    os.replace(tmp, path)
    if progress:
        print(f"rendered {n} images (seed {seed}) in {time.time() - t0:.0f} s -> {path}", flush=True)
    return data


def draw_captions(kind: torch.Tensor, color: torch.Tensor, view: torch.Tensor, rng,
                  kinds: list[str], colors: list[str], views: list[str],
                  view_prob: float = CAPTION_VIEW_PROB, drop_prob: float = 0.0) -> list[str]:
    """Random paraphrase per sample; with probability `view_prob` it names the sample's view bin,
    with probability `drop_prob` it is "" (classifier-free guidance dropout). rng: numpy Generator."""
    from . import sample_caption

    captions = []
    for k, c, v in zip(kind.tolist(), color.tolist(), view.tolist()):
        if drop_prob > 0 and rng.random() < drop_prob:
            captions.append("")
            continue
        with_view = rng.random() < view_prob
        captions.append(sample_caption(kinds[k], colors[c], views[v] if with_view else None, rng))
    return captions


def save_grid(images: torch.Tensor, path: str | Path, captions: list[str] | None = None, columns: int = 8,
              scale: int = 4) -> None:
    """Contact sheet of [B, 3, H, W] images in [0, 1] (uint8 accepted), upscaled, with captions."""
    from PIL import Image, ImageDraw

    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    B, _, H, W = images.shape
    rows = math.ceil(B / columns)
    cell_w, cell_h = W * scale, H * scale + (24 if captions else 0)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (200, 200, 200))
    draw = ImageDraw.Draw(sheet)
    for i in range(B):
        array = (images[i].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        tile = Image.fromarray(array).resize((W * scale, H * scale), Image.NEAREST)
        x, y = (i % columns) * cell_w, (i // columns) * cell_h
        sheet.paste(tile, (x, y))
        if captions:
            text = captions[i]
            line1, line2 = text[:cell_w // 6], text[cell_w // 6: 2 * (cell_w // 6)]
            draw.text((x + 1, y + H * scale), line1, fill=(0, 0, 0))
            draw.text((x + 1, y + H * scale + 11), line2, fill=(0, 0, 0))
    sheet.save(path)
