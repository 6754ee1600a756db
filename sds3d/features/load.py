"""Load a 2D feature teacher from a folder: the shipped part teacher, or CLIP / DINOv2 through
transformers.

The folder's `config.json` decides: `"teacher": "sds3d-part-teacher"` is an export of
`sds3d.world.train_part_teacher` (`PartTeacher`); a `"model_type"` of "clip" or "dinov2" is a
transformers model folder (`TransformersTeacher`). Without a path, the part teacher shipped in
`assets/feature_teacher/`.
"""

from __future__ import annotations

import json
from pathlib import Path

from sds3d.errors import InputError

from .teacher import FeatureTeacher

SHIPPED_TEACHER = "feature_teacher"  # folder under sds3d/assets/


def default_teacher_path() -> Path:
    """`assets/feature_teacher/` of this install (it may be absent in a source checkout)."""
    from sds3d.assets import ASSETS_DIR

    return ASSETS_DIR / SHIPPED_TEACHER


def load_feature_teacher(path: str | Path | None = None) -> FeatureTeacher:
    """The teacher in `path` (default: the shipped part teacher). InputError, one line naming the
    folder, if it is missing, has no readable config.json, is of an unknown type or is damaged."""
    from .part_teacher import TEACHER_NAME, PartTeacher

    folder = Path(path).expanduser() if path is not None else default_teacher_path()
    if not folder.is_dir():
        hint = (" (train it with `python -m sds3d.world.train_part_teacher`)" if path is None
                else "; give a folder with config.json")
        raise InputError(f"feature teacher folder {folder} does not exist{hint}")
    try:
        config = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        raise InputError(f"feature teacher {folder}: no config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"feature teacher {folder}: config.json is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise InputError(f"feature teacher {folder}: config.json is not a JSON object")
    if config.get("teacher") == TEACHER_NAME:
        return PartTeacher.load(folder)
    if "model_type" in config:
        from .transformers_teacher import TransformersTeacher

        return TransformersTeacher.load(folder)
    raise InputError(f"feature teacher {folder}: config.json names neither a {TEACHER_NAME} export "
                     "nor a transformers model_type (clip, dinov2)")
