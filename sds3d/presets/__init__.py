"""Named presets: JSON files of config overrides for documented recipes (`--preset NAME`).

Each `<name>.json` holds {"description": one line, "set": nested fields to override}; a preset only
sets the fields it names, on top of the defaults or a --config.
"""

from __future__ import annotations

import json
from pathlib import Path

from sds3d.config import set_field
from sds3d.errors import InputError

PRESETS_DIR = Path(__file__).parent


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESETS_DIR.glob("*.json"))


def load_preset(name: str) -> dict:
    """{"description": str, "set": dict} of a shipped preset; InputError for an unknown name."""
    if name not in preset_names():
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")
    return json.loads((PRESETS_DIR / f"{name}.json").read_text())


def preset_fields(preset: dict) -> list[tuple[str, object]]:
    """[(dotted field path, value)] of every field a loaded preset sets, in its file's order."""
    return list(_leaves(preset["set"]))


def apply_preset(config, name: str):
    """`config` with preset `name`'s fields set (a new config; the original is unchanged)."""
    for path, value in preset_fields(load_preset(name)):
        config = set_field(config, path, value)
    return config


def arm_config(config, arm: str):
    """`config` for a benchmark arm: "defaults" leaves it as it is, any other arm is a preset's name."""
    return config if arm == "defaults" else apply_preset(config, arm)


def _leaves(values: dict, prefix: str = ""):
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value
