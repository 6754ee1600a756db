"""Part labels for generated assets: the prompted kind's ground-truth parts carried onto the asset.

A generated asset has no part labels of its own. Its visual hull (carved as `sds3d.shape_accuracy`
does) is placed on the hull of the prompted kind's micro-world mesh: centroids and RMS radii are
matched, and the yaw is the one of least Chamfer distance within +-`YAW_WINDOW` degrees of the
world's front. The embedded priors generate objects facing azimuth 0, and a search over every yaw
turns near-symmetric shapes around (a generated mug without a handle matched best at 195 degrees,
its label then landing on the back). Each Gaussian, so placed, takes the part of its nearest point
on the mesh's surface when that point is closer than `TOLERANCE` (the mesh's world units; objects
fit in [-0.5, 0.5]^3), else -1: the asset has matter where its kind has none.

    runs = generated_runs("runs/suite")        # [(run folder, kind, colour)] of a text_to_3d.py --out
    labels = transfer_parts(gaussians, "mug")   # .parts [N], .placed [N, 3], .yaw_degrees, .chamfer
    part_area_shares("mug")                     # [P]: what each part's share would be on the mesh
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

TOLERANCE = 0.05
YAW_WINDOW = 15.0  # degrees either side of the front
YAW_STEP = 5.0
SURFACE_SAMPLES = 100_000


@dataclass
class TransferredParts:
    parts: torch.Tensor  # [N] long: part index into KINDS[kind].parts, -1 where unlabelled
    placed: torch.Tensor  # [N, 3] the Gaussians' centres in the mesh's frame
    yaw_degrees: float
    chamfer: float  # normalised hulls' symmetric Chamfer distance at that yaw

    @property
    def labelled_fraction(self) -> float:
        return float((self.parts >= 0).float().mean())


def generated_runs(folder: str | Path) -> list[tuple[Path, str, str]]:
    """(run folder, kind, colour) of each run folder in `folder` (config.json and checkpoint.pt)
    whose prompt names one micro-world kind and colour, sorted by folder name."""
    from sds3d.features.assets import run_prompt
    from sds3d.world.captions import parse_prompt

    runs = []
    for run in sorted(Path(folder).iterdir()):
        if not (run / "checkpoint.pt").is_file():
            continue
        parsed = parse_prompt(run_prompt(run) or "")
        if parsed is not None:
            runs.append((run, parsed[0], parsed[1]))
    return runs


def _yaw(angle_degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(angle_degrees)), math.sin(math.radians(angle_degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@torch.no_grad()
def transfer_parts(gaussians, kind: str, tolerance: float = TOLERANCE, window: float = YAW_WINDOW) -> TransferredParts:
    """The parts of micro-world `kind` carried onto generated `gaussians` (see the module docstring)."""
    from scipy.spatial import cKDTree

    from sds3d.cuda.mesh_rasterizer import render_trimesh
    from sds3d.features.part_oracle import face_parts
    from sds3d.representations.mesh import Mesh
    from sds3d.shape_accuracy import best_yaw, hull_surface, normalise, shape_cameras
    from sds3d.world import make_object

    cameras = shape_cameras()
    mesh = make_object(kind, "red").mesh
    asset = hull_surface(gaussians.render(cameras).alpha, cameras)
    reference = hull_surface(render_trimesh(mesh, cameras).alpha, cameras)
    if len(asset) < 4:
        raise ValueError(f"the asset of {kind!r} has no opaque hull to place")
    (c_a, r_a), (c_r, r_r) = (_centre_and_radius(p) for p in (asset, reference))
    angles = np.radians(np.arange(-window, window + YAW_STEP / 2, YAW_STEP))
    yaw, chamfer = best_yaw(normalise(asset), normalise(reference), angles)
    yaw = round(math.degrees(yaw), 6)
    means = gaussians.means.detach().double().numpy()
    placed = ((means - c_a) / r_a) @ _yaw(yaw).T * r_r + c_r
    surface, _, _, faces, _ = Mesh.from_trimesh(mesh).sample_surface(SURFACE_SAMPLES, torch.Generator().manual_seed(0))
    distance, nearest = cKDTree(surface.numpy()).query(placed)
    parts = face_parts(kind)[faces.numpy()[nearest]]
    parts = np.where(distance < tolerance, parts, -1)
    return TransferredParts(torch.from_numpy(parts).long(), torch.from_numpy(placed).float(), yaw, chamfer)


def part_area_shares(kind: str) -> np.ndarray:
    """[P]: each part's share of the micro-world mesh's surface area (parts in `KINDS[kind].parts` order)."""
    from sds3d.features.part_oracle import face_parts
    from sds3d.world import make_object

    areas = make_object(kind, "red").mesh.area_faces
    return np.bincount(face_parts(kind), weights=areas) / areas.sum()


def _centre_and_radius(points: np.ndarray) -> tuple[np.ndarray, float]:
    centre = points.mean(axis=0)
    return centre, max(float(np.sqrt(((points - centre) ** 2).sum(axis=1).mean())), 1e-8)
