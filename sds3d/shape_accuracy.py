"""Classifier-free shape accuracy: is the asset's 3D shape nearest to the prompted kind's?

A 2D classifier can call a red blob "a red mug" from its colour and outline alone. This score looks
at 3D shape only:

1. Carve a visual hull from silhouettes (alpha > 0.5) seen from `shape_cameras` (8 azimuths at 4
   elevations and one view from above) on a voxel grid and keep its largest part, parts closer than
   `BRIDGE` voxels counting as joined (floaters are real 3D Gaussians, so carving alone keeps them,
   while a thin leg or pole may show a gap in a fuzzy asset; every ground-truth kind is one part);
   its boundary voxels are the shape's surface points. Silhouettes, unlike points
   back-projected from expected depth, do not sink into fuzzy, semi-transparent Gaussians.
2. Normalise without rotating: subtract the centroid, divide by the RMS radius.
3. Compare with every micro-world kind's ground truth, carved the same way from renders of its mesh
   (so concavities that silhouettes cannot see are missing from both), by symmetric Chamfer
   distance, minimised over a yaw rotation about the up axis (+z).

`shape_acc` is 1 when the prompted kind is the nearest of all kinds; the rank (1 = nearest) and the
margin (runner-up's distance minus the prompted kind's; > 0 when right) say by how much.
"""

from __future__ import annotations

import functools
import hashlib
import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from sds3d.cameras import Cameras, orbit_cameras

SHAPE_ELEVATIONS = (-30.0, 0.0, 30.0, 60.0)
SHAPE_AZIMUTHS = tuple(range(-180, 180, 45))
TOP_ELEVATION = 85.0
GRID = 48  # voxels per axis
BOUND = 0.8  # the grid spans [-BOUND, BOUND]^3; micro-world objects fit in [-0.5, 0.5]^3
YAWS = 24  # yaw search in steps of 15 degrees
MAX_POINTS = 1000
BRIDGE = 3  # voxels (0.1 world units): gaps narrower than about twice this join two parts


def shape_cameras(resolution: int = 64, radius: float = 2.5, fovy: float = 40.0) -> Cameras:
    """33 orbit cameras: 8 azimuths x `SHAPE_ELEVATIONS` plus one from above."""
    elevation = [e for e in SHAPE_ELEVATIONS for _ in SHAPE_AZIMUTHS] + [TOP_ELEVATION]
    azimuth = [float(a) for _ in SHAPE_ELEVATIONS for a in SHAPE_AZIMUTHS] + [0.0]
    return orbit_cameras(torch.tensor(elevation), torch.tensor(azimuth), radius, fovy, resolution)


def _voxel_centres(grid: int = GRID, bound: float = BOUND) -> torch.Tensor:
    axis = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2 * bound - bound
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def visual_hull(alpha: torch.Tensor, cameras: Cameras, grid: int = GRID, bound: float = BOUND,
                threshold: float = 0.5) -> torch.Tensor:
    """Occupancy [grid, grid, grid] (bool, index order x, y, z) of the voxels whose centre projects
    inside the silhouette (alpha > threshold) of every view that sees it; alpha [B, H, W, 1] or
    [B, H, W]. A voxel projecting outside an image is not carved by that view."""
    masks = (alpha.reshape(len(cameras), cameras.height, cameras.width) > threshold).cpu()
    points = _voxel_centres(grid, bound)
    homogeneous = torch.cat([points, torch.ones(len(points), 1)], dim=-1)
    cam = torch.einsum("nj,bij->bni", homogeneous, cameras.viewmats.cpu().float())  # [B, N, 4]
    z = cam[..., 2].clamp(min=1e-6)
    K = cameras.Ks.cpu().float()
    u = torch.floor(K[:, None, 0, 0] * cam[..., 0] / z + K[:, None, 0, 2]).long()
    v = torch.floor(K[:, None, 1, 1] * cam[..., 1] / z + K[:, None, 1, 2]).long()
    seen = (cam[..., 2] > 0) & (u >= 0) & (u < cameras.width) & (v >= 0) & (v < cameras.height)
    pixel = (v.clamp(0, cameras.height - 1) * cameras.width + u.clamp(0, cameras.width - 1))  # [B, N]
    hit = masks.reshape(len(cameras), -1).gather(1, pixel)
    inside = (hit | ~seen).all(dim=0)
    return inside.reshape(grid, grid, grid)


def largest_component(occupancy: torch.Tensor, bridge: int = BRIDGE) -> torch.Tensor:
    """The occupied voxels of the largest 6-connected component of the grid dilated by `bridge` voxels:
    parts closer than about 2 * bridge voxels count as one (empty stays empty)."""
    from scipy import ndimage

    occupied = occupancy.cpu().numpy()
    grown = ndimage.binary_dilation(occupied, iterations=bridge) if bridge else occupied
    labels, count = ndimage.label(grown)
    if count <= 1:
        return occupancy
    sizes = np.bincount(labels.ravel())[1:]
    return torch.from_numpy((labels == int(np.argmax(sizes)) + 1) & occupied)


def surface_points(occupancy: torch.Tensor, bound: float = BOUND) -> np.ndarray:
    """Centres [P, 3] of occupied voxels with at least one empty 6-neighbour (outside counts as empty)."""
    grid = occupancy.shape[0]
    padded = torch.nn.functional.pad(occupancy[None, None].float(), (1, 1, 1, 1, 1, 1))[0, 0]
    full = padded[2:, 1:-1, 1:-1] * padded[:-2, 1:-1, 1:-1] * padded[1:-1, 2:, 1:-1] * padded[1:-1, :-2, 1:-1] \
        * padded[1:-1, 1:-1, 2:] * padded[1:-1, 1:-1, :-2]
    boundary = occupancy & (full < 0.5)
    index = torch.nonzero(boundary).float()
    return ((index + 0.5) / grid * 2 * bound - bound).numpy()


def normalise(points: np.ndarray) -> np.ndarray:
    """Rotation-free normalisation: centroid to the origin, RMS radius 1."""
    centred = points - points.mean(axis=0)
    return centred / max(float(np.sqrt((centred**2).sum(axis=1).mean())), 1e-8)


def _subsample(points: np.ndarray, n: int = MAX_POINTS) -> np.ndarray:
    if len(points) <= n:
        return points
    return points[np.random.default_rng(0).choice(len(points), n, replace=False)]


def hull_surface(alpha: torch.Tensor, cameras: Cameras) -> np.ndarray:
    """Surface points [P, 3] (world units, not normalised) of the largest part of the visual hull of
    silhouettes `alpha` seen from `cameras`."""
    return surface_points(largest_component(visual_hull(alpha, cameras)))


@torch.no_grad()
def shape_points(representation, cameras: Cameras | None = None) -> np.ndarray:
    """Normalised surface points [P, 3] of a representation's visual hull (empty when nothing is
    opaque enough to carve)."""
    cameras = shape_cameras() if cameras is None else cameras
    points = hull_surface(representation.render(cameras.to(representation_device(representation))).alpha, cameras)
    return _subsample(normalise(points)) if len(points) >= 4 else np.zeros((0, 3))


def representation_device(representation) -> torch.device:
    parameters = list(representation.parameters()) if hasattr(representation, "parameters") else []
    return parameters[0].device if parameters else torch.device("cpu")


def mesh_shape_points(mesh) -> np.ndarray:
    """`shape_points` of a trimesh (rendered with the mesh rasterizer from `shape_cameras`)."""
    from sds3d.cuda.mesh_rasterizer import render_trimesh

    cameras = shape_cameras()
    return _subsample(normalise(hull_surface(render_trimesh(mesh, cameras).alpha, cameras)))


# What the reference shapes depend on besides the meshes: this score and the mesh rasterizer.
_REFERENCE_SOURCES = ("sds3d/shape_accuracy.py", "sds3d/cameras.py", "cuda/mesh_rasterizer.py", "cuda/_torch_mesh.py",
                      "cuda/csrc/mesh_raster.cpp", "cuda/csrc/mesh_math.h")


def _reference_key(meshes: dict) -> str:
    """sha256 of the meshes' vertices and faces and of the sources in `_REFERENCE_SOURCES`."""
    import sds3d
    import sds3d.cuda

    digest = hashlib.sha256()
    roots = {"sds3d": Path(sds3d.__file__).parent, "cuda": Path(sds3d.cuda.__file__).parent}
    for source in _REFERENCE_SOURCES:
        package, _, rest = source.partition("/")
        path = roots[package] / rest
        digest.update(path.read_bytes() if path.is_file() else f"{source} missing".encode())
    for kind, mesh in meshes.items():
        digest.update(kind.encode())
        digest.update(np.ascontiguousarray(mesh.vertices, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(mesh.faces, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def _save_npz(path: Path, arrays: dict) -> None:
    with open(path, "wb") as handle:  # a file object: np.savez would add ".npz" to a temporary name
        np.savez(handle, **arrays)


@functools.lru_cache(maxsize=None)
def reference_shapes() -> dict[str, np.ndarray]:
    """Normalised hull surface points of every micro-world kind (colour does not matter). Carving
    them takes seconds, so they are kept in `<cache>/reference_shapes/<key>.npz` (`sds3d.cache`),
    keyed by the meshes and the sources they are carved with; an unreadable file is carved again."""
    from sds3d.atomic import atomic_write
    from sds3d.cache import cache_dir
    from sds3d.world import COLORS, KINDS, make_object

    color = next(iter(COLORS))
    meshes = {kind: make_object(kind, color).mesh for kind in KINDS}
    path = cache_dir("reference_shapes") / f"{_reference_key(meshes)}.npz"
    try:
        with np.load(path) as stored:
            if set(stored.files) == set(meshes):
                return {kind: stored[kind] for kind in meshes}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        pass
    shapes = {kind: mesh_shape_points(mesh) for kind, mesh in meshes.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda temporary: _save_npz(temporary, shapes))
    except OSError:  # a read-only home: carve again next time
        pass
    return shapes


def _rotation(angle: float) -> np.ndarray:
    """The rotation [3, 3] by `angle` (radians) about +z."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _mean_distances(tree, copies: list[np.ndarray]) -> list[float]:
    """Mean distance from each of `copies` (equally long point sets) to its nearest point in `tree`, all
    found by one query (on `torch.get_num_threads()` threads: a point's distance does not depend on how
    many); each mean is over its own contiguous slice, so it sums exactly as a query of its own would."""
    distances = tree.query(np.concatenate(copies), workers=torch.get_num_threads())[0]
    return [block.mean() for block in np.split(distances, len(copies))]


def best_yaw(points: np.ndarray, reference: np.ndarray, angles) -> tuple[float, float]:
    """(angle, distance): the yaw among `angles` (radians) of least symmetric mean nearest-neighbour
    distance between `points` rotated about +z and `reference` (both [P, 3], already normalised), the
    first of equal minima; (nan, inf) when either is empty or `angles` is. Each tree is built once and
    queried once with all the rotated copies."""
    from scipy.spatial import cKDTree

    angles = list(angles)
    if len(points) == 0 or len(reference) == 0 or not angles:
        return float("nan"), float("inf")
    rotations = [_rotation(angle) for angle in angles]
    forward = _mean_distances(cKDTree(reference), [points @ r.T for r in rotations])  # the asset rotated by +angle
    backward = _mean_distances(cKDTree(points), [reference @ r for r in rotations])  # = the reference by -angle
    best = (float("nan"), float("inf"))
    for angle, f, b in zip(angles, forward, backward):
        if 0.5 * (f + b) < best[1]:
            best = (float(angle), float(0.5 * (f + b)))
    return best


def yaw_chamfer(points: np.ndarray, reference: np.ndarray, yaws: int = YAWS) -> float:
    """min over `yaws` evenly spaced yaws of the symmetric mean nearest-neighbour distance between
    `points` rotated about +z and `reference` (both [P, 3], already normalised)."""
    return best_yaw(points, reference, (2 * math.pi * k / yaws for k in range(yaws)))[1]


def rank_kinds(points: np.ndarray) -> list[tuple[str, float]]:
    """(kind, yaw-minimised Chamfer) for every micro-world kind, nearest first."""
    distances = {kind: yaw_chamfer(points, reference) for kind, reference in reference_shapes().items()}
    return sorted(distances.items(), key=lambda item: item[1])


def shape_scores(points: np.ndarray, kind: str) -> dict:
    """{"shape_acc", "shape_rank", "shape_margin", "shape_nearest"} of normalised points for `kind`."""
    ranking = rank_kinds(points)
    names = [name for name, _ in ranking]
    distance = dict(ranking)
    runner_up = min(d for name, d in ranking if name != kind)
    margin = runner_up - distance[kind]
    return {"shape_acc": float(names[0] == kind), "shape_rank": names.index(kind) + 1,
            "shape_margin": float(margin) if math.isfinite(margin) else None, "shape_nearest": names[0]}
