"""Dataclass configs <-> JSON, and `a.b.c=value` overrides (values parsed as JSON, else strings).

JSON arrays become tuples (schedules such as [start_step, v0, v1, end_step] and ranges are tuples
in the configs), so a config survives a round trip through config.json unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls, data: dict):
    """Build dataclass `cls` from a (nested) dict; unknown keys are an error naming the key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value)
        kwargs[name] = _tuples(value)
    return cls(**kwargs)


def apply_override(config, assignment: str):
    """`guidance.scale=30` -> a new config with that field replaced (nested dataclasses allowed)."""
    if "=" not in assignment:
        raise ValueError(f"override {assignment!r} must look like key.path=value")
    path, raw = assignment.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return _replace_path(config, path.strip().split("."), value, path)


def _replace_path(config, keys: list[str], value, full: str):
    names = {f.name for f in dataclasses.fields(config)}
    if keys[0] not in names:
        raise ValueError(f"unknown config key {full!r} ({type(config).__name__} has: {', '.join(sorted(names))})")
    current = getattr(config, keys[0])
    if len(keys) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"config key {full!r}: {keys[0]} is not a section")
        value = _replace_path(current, keys[1:], value, full)
    elif dataclasses.is_dataclass(current) and isinstance(value, dict):
        value = from_dict(type(current), value)
    return dataclasses.replace(config, **{keys[0]: _tuples(value)})


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def save_json(config, path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_dict(config), indent=2))
    tmp.replace(path)


def load_json(cls, path):
    return from_dict(cls, json.loads(Path(path).read_text()))
