"""Where sds3d keeps what it can compute again: `$SDS3D_CACHE_DIR`, else `~/.cache/sds3d`."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(name: str) -> Path:
    """`<cache root>/<name>` (not created here)."""
    root = os.environ.get("SDS3D_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "sds3d") / name


__all__ = ["cache_dir"]
