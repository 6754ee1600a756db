"""The loss log a trainer appends to (a CSV with a header row and the step in the first column)."""

from __future__ import annotations

import csv
from pathlib import Path

from sds3d.atomic import atomic_write


def truncate_log(path: Path, step: int) -> None:
    """Drop loss-log rows past `step` (written after the checkpoint we resume from), atomically; a
    missing log is left missing."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keep = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]

    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="") as f:
            csv.writer(f).writerows(keep)

    atomic_write(path, write)
