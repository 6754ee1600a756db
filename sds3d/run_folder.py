"""An earlier run in a run folder: what it is, and clearing its files before a fresh run starts there.

A fresh run (not resumed) into a folder that holds an earlier generation, edit or fit replaces it: the
files the earlier run wrote (`RUN_FILES`, `RUN_FOLDERS`) are removed just before the new run writes
its first file, so the folder never mixes an old asset with a new checkpoint. Nothing else in the
folder is touched. `sds3d generate` without --out writes to a new `<folder>_<n>` instead
(`unused_folder`), so running the same prompt twice keeps both.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

RUN_FILES = ("config.json", "edit.json", "checkpoint.pt", "metrics.csv", "loss.png", "metrics.json",
             "asset.ply", "asset.glb", "turntable.gif", "turntable.mp4", "preview.png", "particles.png",
             "before_after.gif", "before_after.png", "eval.json", "fit.json", "fit_views.png")
RUN_FOLDERS = ("previews", "tensorboard", "features")  # and particle_<i>/; features/: `sds3d distill-features`


class ReplacedRunWarning(UserWarning):
    """A fresh run started in a folder that held an earlier run, whose files it removed."""


def earlier_run(folder: str | Path) -> str | None:
    """A phrase describing the run in `folder` ("a finished run of 'a red mug'", "an unfinished run of
    'a red mug'"), or None when the folder holds none (no checkpoint.pt)."""
    found = _earlier_run(Path(folder))
    return None if found is None else found[1]


def _earlier_run(folder: Path) -> tuple[bool, str] | None:
    """(whether it finished, `earlier_run`'s phrase) of the run in `folder`, or None."""
    if not (folder / "checkpoint.pt").is_file():
        return None
    config = _read_json(folder / "config.json")
    prompt = f" of {config['prompt']!r}" if isinstance(config.get("prompt"), str) else ""
    steps_done, steps = _read_json(folder / "metrics.json").get("steps"), config.get("steps")
    finished = isinstance(steps_done, int) and (not isinstance(steps, int) or steps_done >= steps)
    return finished, f"{'a finished' if finished else 'an unfinished'} run{prompt}"


def replace_earlier_run(folder: str | Path) -> None:
    """Removes the files and folders an earlier run wrote in `folder` (when it holds one), with a
    ReplacedRunWarning naming it. Call it just before the new run's first write."""
    folder = Path(folder)
    found = _earlier_run(folder)
    if found is None:
        return
    finished, described = found
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
    for path in [*(folder / name for name in RUN_FOLDERS), *folder.glob("particle_*")]:
        if path.is_dir():
            shutil.rmtree(path)
    keep = "another --out keeps a run" if finished else "--resume continues a stopped run"
    warnings.warn(f"{folder} held {described}: replaced ({keep})", ReplacedRunWarning, stacklevel=3)


def unused_folder(folder: str | Path) -> Path:
    """`folder` when it holds no run, else the first `<folder>_<n>` (n = 2, 3, ...) that holds none."""
    folder = Path(folder)
    candidate, n = folder, 2
    while earlier_run(candidate) is not None:
        candidate, n = folder.with_name(f"{folder.name}_{n}"), n + 1
    return candidate


def choose_run_folder(folder: str | Path, default: bool, resume: bool) -> tuple[Path, str | None]:
    """Where a command's new run goes, and a note for the user (None: nothing to say). `default`: the
    folder is the command's default rather than the user's choice; when it holds an earlier run, the
    run goes to the next unused `<folder>_<n>`. A folder the user chose is kept (the run replaces what
    it holds, and the note says so); with `resume` nothing changes."""
    folder = Path(folder)
    found = None if resume else _earlier_run(folder)
    if found is None:
        return folder, None
    finished, held = found
    if not default:
        return folder, f"{folder} holds {held}, which this run replaces"
    free = unused_folder(folder)
    keep = f"`--out {folder}` replaces it" if finished else f"`--out {folder} --resume` continues it"
    return free, f"{folder} holds {held} ({keep}); writing to {free}"


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
