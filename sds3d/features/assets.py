"""Where feature fields live beside an asset, and loading an asset with its field.

An asset is a run directory (`load_run`: config.json + checkpoint.pt), a 3DGS PLY (sds3d's or any
trainer's) or a mesh file (.glb, .gltf, .obj, or .ply with faces). Its fields are saved as
`<teacher>-d<latent dim>.safetensors` in `RUN/features/`, or for a file `x.ply` in `x_features/`
beside it.
"""

from __future__ import annotations

from pathlib import Path

from sds3d.errors import InputError
from .field import load_field, read_field_metadata

MESH_SUFFIXES = (".glb", ".gltf", ".obj")


def features_dir(asset) -> Path:
    """The folder that holds the feature fields of the asset at `asset`."""
    path = Path(asset)
    return path / "features" if path.is_dir() else path.with_name(f"{path.stem}_features")


def load_representation(asset):
    """The representation stored at `asset` (run directory, 3DGS .ply, mesh .glb/.gltf/.obj or .ply
    with faces); InputError (one line) for anything else, or a PLY with zero Gaussians."""
    from sds3d.scene.load import ply_kind, run_representation

    path = Path(asset)
    run = run_representation(path)
    if run is not None:
        return run
    suffix = path.suffix.lower()
    if suffix == ".ply" and ply_kind(path) == "gaussians":
        from sds3d.representations import Gaussians

        try:
            gaussians = Gaussians.load_ply(path)
        except InputError:
            raise
        except Exception as error:
            raise InputError(f"{path}: not a readable 3DGS PLY ({str(error).splitlines()[0][:80]})") from None
        if len(gaussians) == 0:
            raise InputError(f"{path}: element 'vertex' holds zero Gaussians; there is nothing to work on")
        return gaussians
    if suffix in MESH_SUFFIXES + (".ply",):
        from sds3d.representations import Mesh

        return Mesh.load(path)
    raise InputError(f"{path}: not an asset sds3d reads (a run directory, .ply, {', '.join(MESH_SUFFIXES)})")


def saved_fields(asset, teacher_name: str | None = None) -> list[Path]:
    """Saved fields of the asset (of one teacher if named), newest first."""
    folder = features_dir(asset)
    paths = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    if teacher_name is not None:
        paths = [p for p in paths if read_field_metadata(p).get("teacher") == teacher_name]
    return paths


def load_with_features(asset, teacher_name: str | None = None, require_features: bool = True):
    """The representation at `asset` with its newest saved feature field attached (of `teacher_name`
    if given). Without a saved field: InputError naming `sds3d distill-features`, or the bare
    representation when `require_features` is False."""
    representation = load_representation(asset)
    fields = saved_fields(asset, teacher_name)
    if fields:
        load_field(fields[0], representation)
    elif require_features:
        raise InputError(f"{asset} has no feature field{f' of {teacher_name}' if teacher_name else ''}: "
                         f"run `sds3d distill-features {asset}` first")
    return representation


__all__ = ["MESH_SUFFIXES", "features_dir", "load_representation", "load_with_features", "saved_fields"]
