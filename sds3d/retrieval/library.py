"""Asset libraries: a folder of 3D assets with their captions, and how an asset is loaded and viewed.

A library is a folder holding meshes (.glb / .gltf / .obj / mesh .ply) and 3DGS PLYs, anywhere
below it, plus `library.jsonl`, one JSON object per line:

    {"file": "chairs/oak.glb", "caption": "a wooden chair", "tags": {"kind": "chair"}}

`file` is relative to the folder, `caption` a non-empty string, `tags` optional (any JSON). The
index that `sds3d library build` writes lives in `<folder>/library_index/` (`sds3d.retrieval.index`).

Loaded assets share one frame, the micro-world's canonical one: sds3d's world axes (+z up, the
front towards +x; GLB / OBJ files are read as +Y up, `sds3d.export.load_trimesh`), bounding-box
centre at the origin and largest bounding-box extent 1. `load_asset(path, yaw_degrees)` then turns
the asset about +z by `yaw_degrees` (counter-clockwise seen from above, the sense of camera
azimuth): an asset whose front is seen from azimuth a faces +x after `yaw_degrees = -a`.

Reference: Seo et al. 2024, "Retrieval-Augmented Score Distillation for Text-to-3D Generation"
(ReDream), arXiv:2402.02972.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from sds3d.errors import InputError

LIBRARY_FILE = "library.jsonl"
INDEX_DIR = "library_index"
ASSET_SUFFIXES = (".glb", ".gltf", ".obj", ".ply")

# The views an asset is indexed from: a ring of 12 cameras (30 degrees apart, azimuth 0 first) a
# little above the horizon, at the micro-world's mean camera distance and field of view, rendered at
# 64 px and area-averaged to 32 px as the evaluator's and the prior's training images were.
VIEW_ELEVATION = 15.0
VIEW_AZIMUTHS = tuple(float(a) for a in range(0, 360, 30))
VIEW_RADIUS = 2.5
VIEW_FOVY = 40.0
RENDER_RESOLUTION = 64
IMAGE_RESOLUTION = 32


class SkippedAssetWarning(UserWarning):
    """An asset of a library that cannot be used (unreadable, missing or without a caption)."""


@dataclass(frozen=True)
class LibraryEntry:
    """One line of `library.jsonl`: `file` relative to the library folder, its caption and tags."""

    file: str
    caption: str
    tags: object = field(default=None)

    def path(self, library: str | Path) -> Path:
        return Path(library) / self.file


def library_dir(directory: str | Path) -> Path:
    """The library folder; InputError if it or its `library.jsonl` is missing."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: no such library folder")
    if not (directory / LIBRARY_FILE).is_file():
        raise InputError(f"{directory}: not an asset library: no {LIBRARY_FILE} (one JSON line per asset: "
                         '{"file": ..., "caption": ...})')
    return directory


def read_entries(directory: str | Path) -> list[LibraryEntry]:
    """The entries of `<directory>/library.jsonl`, in file order. InputError (naming the line) for a
    missing library, a line that is not a JSON object with a string `file` inside the folder and a
    non-empty string `caption`, a file listed twice, or a library with no entries."""
    directory = library_dir(directory)
    source = directory / LIBRARY_FILE
    entries, seen = [], set()
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: not JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object with 'file' and 'caption'")
        file, caption = record.get("file"), record.get("caption")
        if not isinstance(file, str) or not file.strip():
            raise InputError(f"{where}: 'file' must be a non-empty string (the asset's path inside the library)")
        if Path(file).is_absolute() or ".." in Path(file).parts:
            raise InputError(f"{where}: 'file' {file!r} must be a path inside the library folder")
        if not isinstance(caption, str) or not caption.strip():
            raise InputError(f"{where}: 'caption' of {file} must be a non-empty string")
        if Path(file).suffix.lower() not in ASSET_SUFFIXES:
            raise InputError(f"{where}: {file} is not an asset file ({', '.join(ASSET_SUFFIXES)})")
        key = Path(file).as_posix()
        if key in seen:
            raise InputError(f"{where}: {file} is listed twice")
        seen.add(key)
        entries.append(LibraryEntry(key, caption.strip(), record.get("tags")))
    if not entries:
        raise InputError(f"{source}: the library is empty (no asset lines)")
    return entries


def uncaptioned_files(directory: str | Path, entries: list[LibraryEntry]) -> list[str]:
    """Asset files under `directory` (outside the index folder) that `entries` do not list."""
    directory = Path(directory)
    listed = {entry.file for entry in entries}
    found = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.is_file() and path.suffix.lower() in ASSET_SUFFIXES and relative.parts[0] != INDEX_DIR:
            if relative.as_posix() not in listed:
                found.append(relative.as_posix())
    return found


def _obj_companions(path: Path) -> list[Path]:
    """The .mtl files an OBJ names and the textures those name (files that change how it looks)."""
    companions = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for name in re.findall(r"^\s*mtllib\s+(.+?)\s*$", text, flags=re.MULTILINE):
        mtl = path.parent / name
        if mtl.is_file():
            companions.append(mtl)
            material = mtl.read_text(encoding="utf-8", errors="replace")
            for texture in re.findall(r"^\s*map_\w+\s+(?:-\S+\s+\S+\s+)*(.+?)\s*$", material, flags=re.MULTILINE):
                if (mtl.parent / texture).is_file():
                    companions.append(mtl.parent / texture)
    return companions


def content_hash(path: str | Path) -> str:
    """sha256 (hex) of an asset file's bytes and, for an OBJ, of its material and texture files."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] + (_obj_companions(path) if path.suffix.lower() == ".obj" else [])
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def is_gaussian_ply(path: str | Path) -> bool:
    """Whether a .ply file is a 3DGS PLY (its vertices carry `f_dc_0` and `opacity`), not a mesh."""
    path = Path(path)
    if path.suffix.lower() != ".ply":
        return False
    with open(path, "rb") as handle:
        header = handle.read(1 << 16)
    header = header.split(b"end_header", 1)[0]
    return b" f_dc_0" in header and b" opacity" in header


def yaw_rotation(yaw_degrees: float) -> torch.Tensor:
    """[3, 3] float64 rotation about +z by `yaw_degrees` (counter-clockwise seen from above)."""
    c, s = math.cos(math.radians(yaw_degrees)), math.sin(math.radians(yaw_degrees))
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _bounds(points: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(bounding-box centre [3], largest extent) of points [N, 3]."""
    lo, hi = points.min(0).values, points.max(0).values
    return (lo + hi) / 2, float((hi - lo).max())


@torch.no_grad()
def _place_mesh(mesh, yaw_degrees: float):
    centre, extent = _bounds(mesh.positions.double())
    if extent <= 0:
        raise InputError("the mesh is flat in every direction (all vertices at one point)")
    R = yaw_rotation(yaw_degrees)
    mesh.positions.copy_((((mesh.positions.double() - centre) / extent) @ R.T).float())
    return mesh


@torch.no_grad()
def _place_gaussians(gaussians, yaw_degrees: float):
    """Normalised by the box of the Gaussians that are not nearly transparent (opacity >= 0.05),
    between their 0.5th and 99.5th percentiles per axis, so a few floaters do not shrink the object."""
    from sds3d.axes import rotate_gaussians

    params = gaussians.params
    means = params["means"].double()
    solid = gaussians.opacities >= 0.05
    core = means[solid] if int(solid.sum()) >= 8 else means
    lo, hi = torch.quantile(core, 0.005, dim=0), torch.quantile(core, 0.995, dim=0)
    centre, extent = (lo + hi) / 2, float((hi - lo).max())
    if not math.isfinite(extent) or extent <= 0:
        raise InputError("the Gaussians all sit at one point")
    R = yaw_rotation(yaw_degrees)
    scaled = ((means - centre) / extent).float()
    moved, quats, shN = rotate_gaussians(scaled, params["quats"].detach(), params["shN"].detach(), R)
    params["means"].copy_(moved)
    params["quats"].copy_(quats)
    params["shN"].copy_(shN)
    params["scales"].sub_(math.log(extent))
    return gaussians


def load_asset(path: str | Path, yaw_degrees: float = 0.0):
    """An asset file -> a `Mesh` (GLB / GLTF / OBJ / mesh PLY) or `Gaussians` (3DGS PLY) in the
    canonical frame (centred, largest extent 1, +z up), turned by `yaw_degrees` about +z.
    InputError (one line, naming the file) for a missing, unreadable, empty or degenerate file."""
    from sds3d.representations import Gaussians, Mesh

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such asset file")
    try:
        if is_gaussian_ply(path):
            gaussians = Gaussians.load_ply(path)
            if len(gaussians) == 0:
                raise InputError("holds no Gaussians")
            return _place_gaussians(gaussians, yaw_degrees)
        return _place_mesh(Mesh.load(path), yaw_degrees)
    except InputError as error:
        message = str(error)
        raise InputError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def view_cameras(azimuths=VIEW_AZIMUTHS, elevation: float = VIEW_ELEVATION, resolution: int = RENDER_RESOLUTION):
    """Orbit `Cameras` around the canonical frame, one per azimuth (degrees), at `elevation`."""
    from sds3d.cameras import orbit_cameras

    azimuth = torch.as_tensor(azimuths, dtype=torch.float32).reshape(-1)
    return orbit_cameras(elevation, (azimuth + 180.0) % 360.0 - 180.0, VIEW_RADIUS, VIEW_FOVY, resolution)


@torch.no_grad()
def render_views(representation, azimuths=VIEW_AZIMUTHS, elevation: float = VIEW_ELEVATION,
                 resolution: int = IMAGE_RESOLUTION, render_resolution: int = RENDER_RESOLUTION) -> torch.Tensor:
    """Renders of a loaded asset (any `Representation`) over white from the ring of `azimuths`
    (degrees, 0 = the +x side) -> [V, 3, resolution, resolution] in [0, 1]; rendered at
    `render_resolution` and area-averaged, as the micro-world's training images."""
    cameras = view_cameras(azimuths, elevation, render_resolution)
    images = representation.render(cameras).rgb.permute(0, 3, 1, 2).clamp(0, 1).float()
    if images.shape[-1] != resolution:
        images = F.interpolate(images, size=(resolution, resolution), mode="area")
    return images


def warn_skipped(file: str, reason: str) -> None:
    """One warning naming a library asset that is left out, and why."""
    warnings.warn(f"{file}: skipped: {reason}", SkippedAssetWarning, stacklevel=3)


__all__ = ["LIBRARY_FILE", "INDEX_DIR", "ASSET_SUFFIXES", "VIEW_ELEVATION", "VIEW_AZIMUTHS", "VIEW_RADIUS",
           "VIEW_FOVY", "RENDER_RESOLUTION", "IMAGE_RESOLUTION", "SkippedAssetWarning", "LibraryEntry",
           "library_dir", "read_entries", "uncaptioned_files", "content_hash", "is_gaussian_ply", "yaw_rotation",
           "load_asset", "view_cameras", "render_views", "warn_skipped"]
