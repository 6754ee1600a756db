"""One entry point for the scenes an edit starts from: `load_asset(path) -> Representation`.

- a 3DGS PLY (a `vertex` element with x/y/z, f_dc_*, opacity, scale_*, rot_*; any SH degree 0-3,
  ASCII or binary, as the original 3DGS code, gsplat and nerfstudio's splatfacto write it) ->
  `Gaussians`, read by `sds3d.representations.gaussian_ply` (`up` as its header records, else -y);
- a mesh: .glb / .gltf / .obj (+Y up) or a PLY with faces and no 3DGS properties (world frame) ->
  `Gaussians` by `mesh_to_gaussians` (flat discs on the surface, keeping the mesh's colours);
- a finished sds3d run folder (config.json + checkpoint.pt, from `sds3d generate` or `sds3d fit`)
  -> its representation (Gaussians, NeRF or DMTet) restored from the checkpoint.

Bad input is one `InputError` line naming the file and what is wrong; nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sds3d.errors import InputError
from sds3d.representations import Gaussians, Representation

MESH_SUFFIXES = (".glb", ".gltf", ".obj")
GAUSSIAN_FIELDS = ("f_dc_0", "opacity", "scale_0", "rot_0")  # any of them marks a PLY as 3DGS


def ply_kind(path: Path) -> str:
    """"gaussians" or "mesh" from a PLY's header alone: a mesh has a `face` element with rows and
    none of the 3DGS vertex properties. InputError for a file without a PLY header."""
    elements: dict[str, tuple[int, set[str]]] = {}
    with open(path, "rb") as stream:
        lines = iter(stream.readline, b"")
        if next(lines, b"").strip() != b"ply":
            raise InputError(f"{path}: not a PLY file (it does not start with 'ply')")
        current = None
        for raw in lines:
            words = raw.decode("ascii", errors="replace").split()
            if words[:1] == ["end_header"]:
                break
            if words[:1] == ["element"] and len(words) == 3 and words[2].isdigit():
                current = words[1]
                elements[current] = (int(words[2]), set())
            elif words[:1] == ["property"] and current is not None and len(words) >= 3:
                elements[current][1].add(words[-1])
        else:
            raise InputError(f"{path}: not a PLY file (its header never ends: no 'end_header')")
    names = elements.get("vertex", (0, set()))[1]
    faces = elements.get("face", (0, set()))[0] > 0
    return "mesh" if faces and not names.intersection(GAUSSIAN_FIELDS) else "gaussians"


def run_representation(path: Path) -> Representation | None:
    """The representation saved in the run folder `path`; None when `path` is a file (an asset to
    read by its suffix); InputError (one line) when it is neither."""
    if path.is_dir():
        from sds3d.generate import load_run

        return load_run(path)[1]
    if not path.is_file():
        raise InputError(f"{path}: no such run directory or asset file")
    return None


def read_asset(path, up: str | None = None) -> Representation:
    """The representation stored at `path`: a run folder's, a 3DGS PLY's Gaussians (`up` as in
    `load_asset`), a mesh file's Mesh. InputError (one line) for anything else, or a PLY with zero
    Gaussians."""
    path = Path(path)
    run = run_representation(path)
    if run is not None:
        return run
    suffix = path.suffix.lower()
    if suffix == ".ply" and ply_kind(path) == "gaussians":
        try:
            gaussians = Gaussians.load_ply(path, up=up)
        except InputError:
            raise
        except Exception as error:
            raise InputError(f"{path}: not a readable 3DGS PLY ({str(error).splitlines()[0][:80]})") from None
        if len(gaussians) == 0:
            raise InputError(f"{path}: element 'vertex' holds zero Gaussians; there is nothing to work on")
        return gaussians
    if suffix in MESH_SUFFIXES + (".ply",):
        from sds3d.representations.mesh import Mesh

        return Mesh.load(path)
    raise InputError(f"{path}: unsupported file type {suffix or '(none)'!r}; give a 3DGS .ply, a mesh "
                     f"(.glb, .gltf, .obj, .ply with faces) or an sds3d run folder")


def load_asset(path, num_points: int = 20000, up: str | None = None,
               generator: torch.Generator | None = None) -> Representation:
    """A 3DGS PLY, a mesh (.glb/.gltf/.obj, or a PLY with faces) or an sds3d run folder -> the
    representation an edit starts from (see the module docstring): `read_asset`'s, with a mesh as
    `num_points` Gaussians sampled on its surface; `up`: a 3DGS PLY's up axis ("-y" | "+y" | "+z";
    None = its header's, else -y)."""
    from sds3d.representations.mesh import Mesh

    representation = read_asset(path, up)
    if not isinstance(representation, Mesh) or Path(path).is_dir():
        return representation
    if num_points < 1:
        raise InputError(f"num_points must be at least 1, got {num_points}")
    from sds3d.representations.convert import mesh_to_gaussians

    return mesh_to_gaussians(representation, num_points=num_points, generator=generator)


__all__ = ["load_asset", "ply_kind", "read_asset", "run_representation", "MESH_SUFFIXES"]
