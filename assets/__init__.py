"""Package data: the embedded prior and evaluator weights, example meshes.

`asset_path("prior")` resolves a file or folder shipped here, for editable and wheel installs alike.
"""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent


def asset_path(*parts: str) -> Path:
    """Path of a shipped asset; raises FileNotFoundError with the searched location if absent."""
    path = ASSETS_DIR.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"asset {'/'.join(parts)!r} not found under {ASSETS_DIR}")
    return path
