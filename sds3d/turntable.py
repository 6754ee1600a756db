"""Turntable renders of any representation, saved as GIF / MP4 frames and a preview grid PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .cameras import turntable_cameras

ANIMATION_FORMATS = ("gif", "mp4")


@torch.no_grad()
def render_turntable(representation, n_frames: int = 24, resolution: int = 128, elevation: float = 15.0,
                     radius: float = 2.5, fovy: float = 40.0, batch: int = 8) -> np.ndarray:
    """-> uint8 frames [n_frames, H, W, 3], azimuth increasing from the front (0 degrees)."""
    cameras = turntable_cameras(n_frames, elevation=elevation, radius=radius, fovy=fovy, width=resolution)
    frames = [representation.render(cameras[list(range(s, min(s + batch, n_frames)))]).rgb
              for s in range(0, n_frames, batch)]
    rgb = torch.cat(frames).clamp(0, 1)
    return (rgb * 255 + 0.5).to(torch.uint8).cpu().numpy()


def image_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """uint8 [N, H, W, 3] -> one uint8 [rows * H, columns * W, 3] image (white padding)."""
    n, h, w, _ = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.full((rows * h, columns * w, 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
    return grid


def animation_format(path) -> str:
    """The turntable format `path` asks for by its suffix, gif or mp4; ValueError for any other suffix, or for
    MP4 without imageio-ffmpeg."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in ANIMATION_FORMATS:
        raise ValueError(f"turntables are written as {' or '.join(ANIMATION_FORMATS)}, not {suffix or '(no suffix)'!r}")
    if suffix == "mp4":
        try:
            import imageio_ffmpeg  # noqa: F401  (the plugin imageio uses for MP4)
        except ImportError:
            raise ValueError("MP4 turntables need imageio-ffmpeg: pip install imageio-ffmpeg") from None
    return suffix


def save_animation(frames: np.ndarray, path, fps: int = 12) -> Path:
    """Writes a looping GIF, or an H.264 MP4 (through imageio-ffmpeg), by the suffix of `path`."""
    import imageio.v3 as iio

    path = Path(path)
    if animation_format(path) == "gif":
        iio.imwrite(path, frames, duration=1000 / fps, loop=0)
        return path
    iio.imwrite(path, frames, extension=".mp4", plugin="FFMPEG", fps=fps, codec="libx264",
                pixelformat="yuv420p", macro_block_size=2)
    return path


def save_png(image: np.ndarray, path) -> Path:
    from PIL import Image

    Image.fromarray(image).save(path)
    return Path(path)
