"""PLY files in the standard 3DGS layout, readable by common splat viewers.

Vertex properties (float32, binary little-endian): x y z, nx ny nz (zeros), f_dc_0..2,
f_rest_0..(3(K-1)-1) (channel-major: all red coefficients, then green, then blue), opacity (logit),
scale_0..2 (log), rot_0..3 (quaternion w, x, y, z), then our optional feat_0..(D-1).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .gaussians import Gaussians, GaussiansConfig


def _property_names(n_rest: int, feature_dim: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(n_rest)] + ["opacity", "scale_0", "scale_1", "scale_2"]
            + [f"rot_{i}" for i in range(4)] + [f"feat_{i}" for i in range(feature_dim)])


def save_gaussian_ply(path, gaussians: Gaussians) -> None:
    """Writes atomically (temporary file + rename) so a crash never leaves a truncated asset."""
    p = {k: v.detach().float().cpu() for k, v in gaussians.params.items()}
    n = p["means"].shape[0]
    rest = p["shN"].transpose(1, 2).reshape(n, 3 * p["shN"].shape[1])  # explicit: n may be 0
    columns = [p["means"], torch.zeros(n, 3), p["sh0"][:, 0, :], rest, p["opacities"][:, None], p["scales"],
               p["quats"], p["features"]]
    data = torch.cat(columns, dim=1).numpy().astype("<f4")
    names = _property_names(rest.shape[1], p["features"].shape[1])
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names] + ["end_header"]
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())
    tmp.replace(path)


def _read_header(f) -> tuple[int, list[str]]:
    if f.readline().strip() != b"ply":
        raise ValueError("not a PLY file")
    count, names, fmt = None, [], None
    while True:
        line = f.readline()
        if not line:
            raise ValueError("PLY header has no end_header")
        words = line.decode("ascii").split()
        if not words:
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[:2] == ["element", "vertex"]:
            count = int(words[2])
        elif words[0] == "element":
            raise ValueError(f"unexpected PLY element {words[1]!r}: a 3DGS file has only vertices")
        elif words[0] == "property":
            if words[1] != "float":
                raise ValueError(f"3DGS PLY properties are float, got {words[1]} {words[-1]}")
            names.append(words[2])
        elif words[0] == "end_header":
            break
    if fmt != "binary_little_endian":
        raise ValueError(f"only binary_little_endian 3DGS PLY files are supported, got {fmt}")
    return count, names


def load_gaussian_ply(path, config: GaussiansConfig | None = None) -> Gaussians:
    """Inverse of `save_gaussian_ply`; the SH degree and feature size come from the file."""
    with open(path, "rb") as f:
        count, names = _read_header(f)
        data = np.frombuffer(f.read(count * len(names) * 4), dtype="<f4").reshape(count, len(names))
    column = {name: i for i, name in enumerate(names)}
    missing = [k for k in ("x", "f_dc_0", "opacity", "scale_0", "rot_0") if k not in column]
    if missing:
        raise ValueError(f"{path}: not a 3DGS PLY, missing properties {missing}")
    take = lambda prefix, n: torch.from_numpy(np.stack([data[:, column[f"{prefix}{i}"]] for i in range(n)], 1).copy())  # noqa: E731
    n_rest = sum(name.startswith("f_rest_") for name in names)
    feature_dim = sum(name.startswith("feat_") for name in names)
    degree = round(math.sqrt(n_rest // 3 + 1)) - 1
    if (degree + 1) ** 2 - 1 != n_rest // 3 or n_rest % 3:
        raise ValueError(f"{path}: {n_rest} f_rest properties do not form a full SH degree")
    config = config or GaussiansConfig()
    config.sh_degree, config.feature_dim = degree, feature_dim
    means = torch.from_numpy(data[:, [column["x"], column["y"], column["z"]]].copy())
    gaussians = Gaussians(means, torch.zeros(count, 3), scales=torch.ones(count, 3), opacities=torch.full((count,), 0.5),
                          config=config)
    with torch.no_grad():
        gaussians.params["sh0"].copy_(take("f_dc_", 3)[:, None, :])
        if n_rest:
            gaussians.params["shN"].copy_(take("f_rest_", n_rest).reshape(count, 3, n_rest // 3).transpose(1, 2))
        gaussians.params["opacities"].copy_(torch.from_numpy(data[:, column["opacity"]].copy()))
        gaussians.params["scales"].copy_(take("scale_", 3))
        gaussians.params["quats"].copy_(take("rot_", 4))
        if feature_dim:
            gaussians.params["features"].copy_(take("feat_", feature_dim))
    return gaussians
