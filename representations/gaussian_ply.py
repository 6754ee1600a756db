"""3D Gaussians as files: the standard 3DGS PLY (read and written), `.splat` and the compressed PLY
(written through `gsplat.exporter`). A pure format module: it reads and writes the parameters as a
dict of tensors with gsplat's names (`Gaussians.params`); `Gaussians.save_ply` / `load_ply` use it.

3DGS PLY: one `vertex` element with float32 properties x y z, nx ny nz (zeros), f_dc_0..2,
f_rest_0..(3 K - 1) with K = (d + 1)^2 - 1 (channel-major: the K red coefficients, then green, then
blue), opacity (logit), scale_0..2 (log), rot_0..3 (quaternion w, x, y, z), then sds3d's optional
feat_0..(D - 1). Written binary little-endian at the asset's SH degree or any degree 0-3 asked for
(missing bands are zeros, extra ones dropped), so the original 3DGS loader reads it at degree 3.

Orientation (`sds3d.axes`): files are written with `up` = "-y" by default, the convention of
COLMAP-trained 3DGS scenes that SuperSplat, antimatter15/splat and gsplat.js (the web UI's viewer)
show upright; "+z" keeps sds3d's world frame (gsplat's viewer), "+y" is glTF's. Positions,
quaternions and SH coefficients of degree >= 1 are rotated together. The header records the choice
(`comment sds3d up -y`), and reading undoes it; foreign files are taken as "-y" unless told, except
nerfstudio's exports, whose header says `comment Vertical Axis: z` (its world frame, +z up).

Reading (plyfile) accepts any SH degree 0-3, ASCII and either byte order (the layouts of the
original 3DGS code, gsplat and nerfstudio's splatfacto, whose `ply_color_mode rgb` writes uchar
red/green/blue instead of f_dc_*), and ignores properties it does not know. A
one-line `InputError` (a ValueError) naming the file and the property refuses: a file that is not a
PLY, no `vertex` element, a missing required property (x/y/z, f_dc_*, opacity, scale_*, rot_*), an
f_rest count that is no SH degree (9, 24 or 45) or has gaps, and a NaN / infinite value. A file
with zero Gaussians reads (an asset pruned empty round-trips); `sds3d.scene.load.load_asset`, where
an edit starts, refuses it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from sds3d.axes import UP_AXES, rotate_gaussians, world_to_file
from sds3d.errors import InputError
from sds3d.representations.spherical_harmonics import C0

REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
            "rot_0", "rot_1", "rot_2", "rot_3")
_UP_COMMENT = re.compile(r"^sds3d up (\S+)$")
_NERFSTUDIO_UP = re.compile(r"^Vertical Axis: z$", re.IGNORECASE)  # nerfstudio's exports: its +z-up world
COLOURS = ("red", "green", "blue")  # splatfacto's rgb mode: the colour without SH, in place of f_dc_*


def _in_file_frame(params: Mapping[str, torch.Tensor], up: str, sh_degree: int | None) -> dict[str, torch.Tensor]:
    """The parameters (float32, CPU), rotated into the `up` convention, shN [N, K, 3] padded with
    zeros or cut to `sh_degree` (None: the asset's)."""
    p = {k: v.detach().float().cpu() for k, v in params.items()}
    p["means"], p["quats"], p["shN"] = rotate_gaussians(p["means"], p["quats"], p["shN"], world_to_file(up))
    if sh_degree is not None:
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"SH degree must be 0, 1, 2 or 3, got {sh_degree}")
        k = (sh_degree + 1) ** 2 - 1
        shN = p["shN"][:, :k]
        p["shN"] = torch.cat([shN, torch.zeros(len(shN), k - shN.shape[1], 3)], 1)
    return p


def save_gaussian_ply(path, params: Mapping[str, torch.Tensor], up: str = "-y", sh_degree: int | None = None) -> Path:
    """`params` (gsplat's names) as a binary little-endian 3DGS PLY with `up` ("-y" | "+y" | "+z") and
    `sh_degree` (None: the asset's); written atomically (temporary file + rename) so a crash never
    leaves a truncated file."""
    p = _in_file_frame(params, up, sh_degree)
    n, k = p["means"].shape[0], p["shN"].shape[1]
    rest = p["shN"].transpose(1, 2).reshape(n, 3 * k)  # channel-major; explicit shape: n may be 0
    columns = [p["means"], torch.zeros(n, 3), p["sh0"][:, 0, :], rest, p["opacities"][:, None], p["scales"],
               p["quats"], p["features"]]
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(3 * k)]
             + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
             + [f"feat_{i}" for i in range(p["features"].shape[1])])
    data = torch.cat(columns, dim=1).numpy().astype("<f4")
    header = ["ply", "format binary_little_endian 1.0", f"comment sds3d up {up}", f"element vertex {n}"]
    header += [f"property float {name}" for name in names] + ["end_header"]
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())
    tmp.replace(path)
    return path


def save_gaussian_splat(path, params: Mapping[str, torch.Tensor], up: str = "-y") -> Path:
    """`params` as `.splat` (antimatter15/splat: 32 bytes per splat, position and scale float32 x3, RGBA and
    rotation uint8 x4; colour from the DC term only) or, for a name ending in `.compressed.ply`,
    the compressed PLY of SuperSplat / PlayCanvas (8-bit chunks, SH kept), through gsplat.exporter."""
    from gsplat.exporter import export_splats

    path = Path(path)
    compressed = path.name.lower().endswith(".compressed.ply")
    if not compressed and path.suffix.lower() != ".splat":
        raise ValueError(f"{path}: a splat file ends in .splat or .compressed.ply")
    p = _in_file_frame(params, up, None)
    data = export_splats(p["means"], p["scales"], p["quats"], p["opacities"], p["sh0"], p["shN"],
                         format="ply_compressed" if compressed else "splat")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def _column(vertex, name: str, path) -> np.ndarray:
    values = np.asarray(vertex[name], dtype=np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(f"{path}: property {name!r} is NaN or infinite in {int(bad.sum())} of {len(values)} splats")
    return values


def load_gaussian_ply(path, up: str | None = None) -> dict[str, torch.Tensor]:
    """A 3DGS PLY (any SH degree 0-3, ASCII or binary) -> the parameters in the world frame (gsplat's
    names: means, quats, scales and opacities as stored, sh0 [N, 1, 3], shN [N, K, 3], features
    [N, D]). `up`: the file's convention; None = the one its header records (`save_gaussian_ply`
    writes it), else "-y"."""
    from plyfile import PlyData, PlyParseError

    try:
        ply = PlyData.read(str(path))
    except (PlyParseError, ValueError, UnicodeDecodeError, IndexError) as error:
        raise InputError(f"{path}: not a readable PLY file ({str(error).splitlines()[0]})") from None
    if "vertex" not in ply:
        raise InputError(f"{path}: not a 3DGS PLY: no 'vertex' element")
    vertex = ply["vertex"]
    names = [prop.name for prop in vertex.properties]
    rgb = "f_dc_0" not in names and all(colour in names for colour in COLOURS)
    for name in REQUIRED if not rgb else [n for n in REQUIRED if not n.startswith("f_dc_")]:
        if name not in names:
            raise InputError(f"{path}: not a 3DGS PLY: no property {name!r}")
    rest = sorted((n for n in names if re.fullmatch(r"f_rest_\d+", n)), key=lambda n: int(n[7:]))
    features = sorted((n for n in names if re.fullmatch(r"feat_\d+", n)), key=lambda n: int(n[5:]))
    if len(rest) not in (0, 9, 24, 45):
        raise InputError(f"{path}: {len(rest)} f_rest properties do not form SH degree 1, 2 or 3 (9, 24 or 45 of them)")
    gap = next((f"f_rest_{i}" for i, n in enumerate(rest) if n != f"f_rest_{i}"), None)
    if gap is not None:
        raise InputError(f"{path}: property {gap!r} is missing ({len(rest)} f_rest properties, numbered with gaps)")
    if up is None:
        recorded = [m.group(1) for m in map(_UP_COMMENT.match, ply.comments) if m]
        nerfstudio = any(map(_NERFSTUDIO_UP.match, ply.comments))
        up = recorded[0] if recorded else "+z" if nerfstudio else "-y"
    if up not in UP_AXES:
        raise InputError(f"{path}: unknown up axis {up!r}; choose one of {', '.join(UP_AXES)}")

    def stack(columns: list[str]) -> torch.Tensor:  # [N, len(columns)]
        values = [_column(vertex, c, path) for c in columns]
        return torch.from_numpy(np.stack(values, 1) if values else np.zeros((len(vertex), 0), np.float32))

    count, k = len(vertex), len(rest) // 3
    means, quats = stack(["x", "y", "z"]), stack(["rot_0", "rot_1", "rot_2", "rot_3"])
    shN = stack(rest).reshape(count, 3, k).transpose(1, 2)
    if rgb:  # integer colours scaled to [0, 1], then the SH DC term that renders them
        dtype = vertex["red"].dtype
        top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
        sh0 = (stack(list(COLOURS)) / top - 0.5) / C0
    else:
        sh0 = stack(["f_dc_0", "f_dc_1", "f_dc_2"])
    means, quats, shN = rotate_gaussians(means, quats, shN, world_to_file(up).T)
    return {"means": means, "quats": quats, "scales": stack(["scale_0", "scale_1", "scale_2"]),
            "opacities": stack(["opacity"])[:, 0], "sh0": sh0[:, None, :],
            "shN": shN, "features": stack(features)}


__all__ = ["save_gaussian_ply", "save_gaussian_splat", "load_gaussian_ply", "REQUIRED"]
