"""CLI commands that live in their own module, one per file.

Each module defines `add_command(subparsers)`, which adds its parser and sets `func(args) -> int`;
`sds3d.cli.build_parser` finds them here, so a new command needs no edit anywhere else. Keep the
modules' top-level imports light: they run for every `sds3d --help`.
"""

import importlib
import pkgutil


def add_commands(subparsers) -> None:
    """Add every command module's parser to `subparsers`, in name order."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}").add_command(subparsers)
