"""Atomic writes: a file is either its old content or its complete new content, never half-written
(a crash or a kill mid-write leaves the temporary file, which the next write replaces)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """`write(temporary_path)` then rename over `path` (same folder, so the rename is atomic)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def replace_folder(tmp: Path, dest: Path) -> None:
    """Move the complete folder `tmp` to `dest`; an existing `dest` is removed only after the swap (a
    crash leaves it at `dest` or at `<dest>.old-export`). Files end up 0644 and folders 0755."""
    if dest.exists():
        old = dest.with_name(dest.name + ".old-export")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old)
    else:
        os.replace(tmp, dest)
    for f in dest.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)


def atomic_torch_save(obj, path: str | Path) -> None:
    """`torch.save(obj, path)`, atomically and flushed to disk (checkpoints survive a power cut)."""
    import torch

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def atomic_write_json(data, path: str | Path, indent: int | None = 2) -> None:
    """`data` as JSON text in `path`, atomically."""
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(data, indent=indent) + "\n"))
