"""Where feature fields live beside an asset, and loading an asset with its field.

An asset is a run directory (`load_run`: config.json + checkpoint.pt), a 3DGS PLY (sds3d's or any
trainer's) or a mesh file (.glb, .gltf, .obj, or .ply with faces). Its fields are saved as
`<teacher>-d<latent dim>.safetensors` in `RUN/features/`, or for a file `x.ply` in `x_features/`
beside it.
"""

from __future__ import annotations

from pathlib import Path

from sds3d.errors import InputError
from sds3d.scene.load import read_asset
from .field import load_field, read_field_metadata

def features_dir(asset) -> Path:
    """The folder that holds the feature fields of the asset at `asset`."""
    path = Path(asset)
    return path / "features" if path.is_dir() else path.with_name(f"{path.stem}_features")


def saved_fields(asset, teacher_name: str | None = None, teacher_version: str = "") -> list[Path]:
    """Saved fields of the asset (of one teacher if named, and of one version of it if given), newest first."""
    folder = features_dir(asset)
    paths = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    if teacher_name is not None:
        paths = [p for p in paths if read_field_metadata(p).get("teacher") == teacher_name]
    if teacher_version:
        paths = [p for p in paths if read_field_metadata(p).get("teacher_version") == teacher_version]
    return paths


def run_prompt(asset) -> str | None:
    """The prompt of the run directory at `asset` (its config.json's "prompt": for an edit, the edit's
    target), or None for a file or a run without one."""
    import json

    config = Path(asset) / "config.json"
    try:
        prompt = json.loads(config.read_text()).get("prompt") if config.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None
    return prompt if isinstance(prompt, str) and prompt.strip() else None


def load_with_features(asset, teacher_name: str | None = None, require_features: bool = True):
    """The representation at `asset` with its newest saved feature field attached (of `teacher_name`
    if given). Without a saved field: InputError naming `sds3d distill-features`, or the bare
    representation when `require_features` is False."""
    representation = read_asset(asset)
    fields = saved_fields(asset, teacher_name)
    if fields:
        load_field(fields[0], representation)
    elif require_features:
        raise InputError(f"{asset} has no feature field{f' of {teacher_name}' if teacher_name else ''}: "
                         f"run `sds3d distill-features {asset}` first")
    return representation


__all__ = ["features_dir", "load_with_features", "run_prompt", "saved_fields"]
