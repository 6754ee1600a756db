"""A contact sheet of library assets: one render per asset with its caption and score below."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .library import load_asset, render_views

TILE = 128
LABEL_HEIGHT = 30


def asset_thumbnail(path: str | Path, yaw_degrees: float = 0.0, size: int = TILE) -> np.ndarray:
    """uint8 [size, size, 3] render of an asset turned by `yaw_degrees`, seen from azimuth 30 degrees
    (front-left three-quarter view) over white."""
    images = render_views(load_asset(path, yaw_degrees), azimuths=(30.0,), resolution=size, render_resolution=size)
    return (images[0].permute(1, 2, 0) * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()


def save_contact_sheet(tiles: list[np.ndarray], labels: list[str], path: str | Path, columns: int = 5) -> Path:
    """Tiles (uint8 [H, W, 3], one size) in a grid, each with its label (up to two lines, cut to fit)
    below, written as PNG through a temporary file."""
    from PIL import Image, ImageDraw

    if not tiles:
        raise ValueError("a contact sheet needs at least one tile")
    h, w = tiles[0].shape[:2]
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * w, rows * (h + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    characters = max(4, w // 6)
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        r, c = divmod(i, columns)
        x, y = c * w, r * (h + LABEL_HEIGHT)
        sheet.paste(Image.fromarray(tile), (x, y))
        lines = [line[:characters] for line in label.splitlines()[:2]]
        for j, line in enumerate(lines):
            draw.text((x + 2, y + h + 2 + 13 * j), line, fill=(0, 0, 0))
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        sheet.save(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


__all__ = ["TILE", "asset_thumbnail", "save_contact_sheet"]
