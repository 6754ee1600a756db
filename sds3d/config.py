"""Dataclass configs <-> JSON, `a.b.c=value` overrides (values parsed as JSON, else strings), and
type checks from the dataclasses' annotations.

A dataclass may name older names of its fields in a class attribute `FIELD_ALIASES` (old -> new):
they are read as the new names from JSON, `--set` and presets.

JSON arrays become tuples (schedules such as [start_step, v0, v1, end_step] and ranges are tuples
in the configs), so a config survives a round trip through config.json unchanged. A value of the
wrong type (`steps=abc`, a NaN float, a range of the wrong length) is an `InputError` naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path

from .errors import InputError


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass `cls` from a (nested) dict; an unknown key or a value of the wrong type is an
    InputError naming the field (`prefix` is the section's dotted path)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(data, dict):
        raise InputError(f"{prefix or cls.__name__} must be a JSON object of fields, got {_show(data)}")
    data = {_field_name(cls, key): value for key, value in data.items()}
    unknown = set(data) - names
    if unknown:
        raise InputError(f"unknown config field(s) {', '.join(prefix + key for key in sorted(unknown))}; "
                         f"`sds3d config` lists them")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = check_value(_tuples(value), hint, prefix + name)
    return cls(**kwargs)


def apply_override(config, assignment: str):
    """`sds.guidance_scale=30` -> a new config with that field replaced (nested dataclasses allowed);
    InputError for an unknown key or a value of the wrong type."""
    if "=" not in assignment:
        raise InputError(f"--set {assignment!r} must look like key.path=value (e.g. sds.guidance_scale=30)")
    path, raw = assignment.split("=", 1)
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except (json.JSONDecodeError, InputError):
        value = raw
    return _replace_path(config, path.strip().split("."), value, path.strip(), raw)


def set_field(config, path: str, value):
    """A new config with dotted field `path` set to `value` (JSON-like: lists become tuples), type-checked."""
    return _replace_path(config, path.split("."), value, path, value)


def get_field(config, path: str):
    """The value of dotted field `path` of `config` (older field names accepted, `FIELD_ALIASES`)."""
    for key in path.split("."):
        config = getattr(config, _field_name(type(config), key))
    return config


def _field_name(cls, name: str) -> str:
    """`name`, or the field an older name of it stands for (`FIELD_ALIASES`)."""
    return getattr(cls, "FIELD_ALIASES", {}).get(name, name)


def _replace_path(config, keys: list[str], value, full: str, raw):
    names = {f.name for f in dataclasses.fields(config)}
    name = _field_name(type(config), keys[0])
    if name not in names:
        raise InputError(f"unknown config key {full!r} ({type(config).__name__} has: {', '.join(sorted(names))})")
    current = getattr(config, name)
    section = full[:len(full) - len(".".join(keys))]
    if len(keys) > 1:
        if not dataclasses.is_dataclass(current):
            raise InputError(f"config key {full!r}: {section}{keys[0]} is not a section")
        value = _replace_path(current, keys[1:], value, full, raw)
    elif dataclasses.is_dataclass(current):
        value = from_dict(type(current), value, f"{full}.")
    else:
        hint = typing.get_type_hints(type(config))[name]
        if hint is str and not isinstance(value, str):  # prompt=123 is the text "123"
            value = raw
        value = check_value(_tuples(value), hint, full)
    if name == "representation" and hasattr(config, "with_representation"):
        return config.with_representation(value)  # its tuned prior, steps and views come along
    return dataclasses.replace(config, **{name: value})


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def save_json(config, path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_dict(config), indent=2))
    tmp.replace(path)


def load_json(cls, path):
    """`cls` from a JSON file; InputError for a missing or unreadable file, bad JSON or a bad field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(), parse_constant=_no_constant)
    except FileNotFoundError:
        raise InputError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, InputError) as error:
        raise InputError(f"{path}: not a JSON config ({str(error).splitlines()[0][:120]})") from None
    try:
        return from_dict(cls, data)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


def _no_constant(name: str):
    raise InputError(f"{name} is not a number a config may hold")


def _show(value) -> str:
    text = json.dumps(value) if isinstance(value, (str, list, tuple, dict)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


SCHEDULE = "[start_step, start_value, end_value, end_step]"


def type_name(hint) -> str:
    """A short name for a field's annotation: int, float, str, bool, [float, float], float or schedule, ..."""
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        arms = typing.get_args(hint)
        names = ["schedule" if arm in (list, tuple) else type_name(arm) for arm in arms]
        return " or ".join(dict.fromkeys(names))
    if typing.get_origin(hint) is tuple:
        arms = typing.get_args(hint)
        if len(arms) == 2 and arms[1] is Ellipsis:
            return f"[{type_name(arms[0])}, ...]"
        return "[" + ", ".join(type_name(arm) for arm in arms) + "]"
    return getattr(hint, "__name__", str(hint))


def check_value(value, hint, path: str):
    """`value` if it fits annotation `hint` (ints for int, finite numbers for float, 4-element schedules
    for the bare list | tuple of `Scheduled`), else InputError naming `path` and the expected type."""
    if _fits(value, hint):
        return value
    raise InputError(f"{path} must be {_article(type_name(hint))}, got {_show(value)}")


def _article(name: str) -> str:
    if name.startswith("["):
        return f"a list {name}"
    if name.startswith(("int", "float", "str", "bool")) or " or " in name:
        words = {"int": "an integer", "float": "a finite number", "str": "a string", "bool": "true or false",
                 "schedule": f"a schedule {SCHEDULE}", "null": "null"}
        return " or ".join(words.get(word, word) for word in name.split(" or "))
    return name


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fits(value, hint) -> bool:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_fits(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return _number(value)
    if hint is str:
        return isinstance(value, str)
    if hint in (list, tuple):  # the schedule arm of `Scheduled`
        return isinstance(value, tuple) and len(value) == 4 and all(_number(v) for v in value)
    if typing.get_origin(hint) is tuple:
        arms = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(arms) == 2 and arms[1] is Ellipsis:
            return all(_fits(v, arms[0]) for v in value)
        return len(value) == len(arms) and all(_fits(v, arm) for v, arm in zip(value, arms))
    return isinstance(value, hint)
