"""Fields on grids -> surface meshes: marching cubes of a density (a NeRF's, or 3D Gaussians'
splatted on a grid), the level whose silhouettes match a render best, and surface colours.

Grids follow `tet_grid`: [R + 1]^3 vertices over [-bound, bound]^3, x slowest. Marching cubes
needs PyMCubes (`pip install pymcubes`, in the `mesh` extra). The representations' `to_mesh`
methods are built from these.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from sds3d.cameras import Cameras
from sds3d.cuda._torch_gaussians import _quat_to_rotmat
from .mesh import Mesh, MeshConfig
from .spherical_harmonics import C0
from .tet_grid import grid_points

if TYPE_CHECKING:
    from .gaussians import Gaussians


def optional_import(module: str, package: str):
    """Import an optional dependency of the mesh tools, or fail naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"this needs `{module}`: pip install {package} (or sds3d[mesh])") from error



DENSITY_SMOOTHING = 0.5  # Gaussians' scales are widened by this many grid spacings on a density grid


def _smoothed_inverse_covariance_factors(gaussians: Gaussians, min_scale: float):
    """-> (M [N, 3, 3] with |M (x - mean)|^2 the Mahalanobis distance, scales [N, 3]) for the
    scales widened to sqrt(s^2 + min_scale^2), so a flat disc still spans a grid cell."""
    scales = torch.sqrt(gaussians.scales.detach() ** 2 + min_scale ** 2)
    rotation = _quat_to_rotmat(gaussians.quats.detach())  # columns: local axes in world
    return rotation.transpose(1, 2) / scales[:, :, None], scales


def gaussian_density_grid(gaussians: Gaussians, resolution: int = 128, bound: float = 0.6,
                          smoothing: float = DENSITY_SMOOTHING, budget: int = 1 << 22) -> torch.Tensor:
    """sum_i opacity_i exp(-|M_i (x - mean_i)|^2 / 2) at the grid vertices -> [R + 1]^3, with scales
    widened by `smoothing` grid spacings; each Gaussian is splatted to the cells within 3 of its
    widened standard deviations (`budget` bounds the Gaussian x cell pairs held at once)."""
    h, n = 2 * bound / resolution, resolution + 1
    M, scales = _smoothed_inverse_covariance_factors(gaussians, smoothing * h)
    means, opacities = gaussians.means.detach(), gaussians.opacities.detach()
    device = means.device
    radius = torch.ceil(3 * scales.amax(-1) / h).long()
    centre = torch.round((means + bound) / h).long()
    base = centre * h - bound - means  # [N, 3] from each mean to its nearest grid vertex
    grid = torch.zeros(n ** 3, device=device)
    for r in radius.unique().tolist():
        steps = torch.arange(-r, r + 1, device=device)
        offsets = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)  # [K, 3]
        offset_flat = (offsets[:, 0] * n + offsets[:, 1]) * n + offsets[:, 2]
        members = (radius == r).nonzero()[:, 0]
        chunk = max(1, budget // len(offsets))
        for start in range(0, len(members), chunk):
            i = members[start:start + chunk]
            valid = torch.ones(len(i), len(offsets), dtype=torch.bool, device=device)
            for axis in range(3):
                coordinate = centre[i, axis, None] + offsets[:, axis]
                valid &= (coordinate >= 0) & (coordinate < n)
            local = torch.einsum("cij,ckj->cki", M[i], base[i, None] + offsets * h)  # [C, K, 3]
            squared = (local ** 2).sum(-1)
            keep = valid & (squared < 9)  # within 3 standard deviations
            c, k = keep.nonzero(as_tuple=True)
            flat = (centre[i[c], 0] * n + centre[i[c], 1]) * n + centre[i[c], 2] + offset_flat[k]
            grid.index_add_(0, flat, opacities[i[c]] * torch.exp(-0.5 * squared[c, k]))
    return grid.reshape(n, n, n).cpu()


def grid_to_mesh(volume: torch.Tensor, level: float, bound: float, fill_interior: bool = True):
    """Marching cubes of the level set of a field that is high inside. volume [R + 1]^3 on
    `grid_points(R, bound)` -> (vertices [M, 3] float32, faces [K, 3] int64), outward normals.
    fill_interior: cavities enclosed by the region above `level` count as inside, so a shell (the
    density of surface Gaussians) gives its outer surface only."""
    from scipy import ndimage

    mcubes = optional_import("mcubes", "pymcubes")
    values = volume.detach().cpu().double().numpy()
    if fill_interior:
        solid = values > level
        cavity = ndimage.binary_fill_holes(solid) & ~solid
        values = np.where(cavity, max(values.max(), level + 1.0), values)
    vertices, faces = mcubes.marching_cubes(values, level)
    if len(faces) == 0:
        raise ValueError(f"no surface: the field never crosses the level {level:g} inside [-{bound:g}, {bound:g}]^3 "
                         f"(its maximum there is {values.max():.3g})")
    h = 2 * bound / (volume.shape[0] - 1)
    vertices = torch.as_tensor(vertices * h - bound, dtype=torch.float32)
    return vertices, torch.as_tensor(faces.astype(np.int64))


def density_grid(density_fn: Callable[[torch.Tensor], torch.Tensor], resolution: int = 128, bound: float = 0.6,
                 chunk: int = 1 << 16) -> torch.Tensor:
    """density_fn(points [N, 3]) -> [N] on `grid_points(resolution, bound)`, `chunk` points at a
    time, without gradients -> [R + 1]^3 on the CPU."""
    points = grid_points(resolution, bound)
    with torch.no_grad():
        values = torch.cat([density_fn(points[s:s + chunk]).reshape(-1).float().cpu()
                            for s in range(0, len(points), chunk)])
    return values.reshape((resolution + 1,) * 3)


def silhouette_level(volume: torch.Tensor, bound: float, cameras: Cameras, target_alpha: torch.Tensor,
                     levels: tuple[float, ...]) -> float:
    """The level in `levels` whose surface (`grid_to_mesh`) has the silhouettes closest to the
    target's: intersection over union of mesh alpha > 0.5 and target_alpha [C, H, W, 1] > 0.5,
    summed over the cameras. volume [R + 1]^3 on `grid_points(R, bound)`."""
    target = target_alpha.detach().cpu()[..., 0] > 0.5
    scores = {}
    with torch.no_grad():
        for level in levels:
            if volume.max() <= level:
                continue
            alpha = Mesh(*grid_to_mesh(volume, level, bound)).render(cameras).alpha.cpu()[..., 0] > 0.5
            scores[level] = ((alpha & target).sum() / (alpha | target).sum().clamp_min(1)).item()
    if not scores:
        raise ValueError(f"no surface: the field never crosses any level of {levels} inside "
                         f"[-{bound:g}, {bound:g}]^3 (its maximum there is {volume.max().item():.3g})")
    return max(scores, key=scores.get)


def density_to_mesh(density_fn: Callable[[torch.Tensor], torch.Tensor], threshold: float, resolution: int = 128,
                    bound: float = 0.6, color_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    chunk: int = 1 << 16, config: MeshConfig | None = None,
                    volume: torch.Tensor | None = None) -> Mesh:
    """Mesh of {x : density_fn(x) > threshold}: `density_grid` (or the given `volume` of it),
    cavities filled, marching cubes; vertex colours from color_fn(points [N, 3]) -> [N, 3] when given."""
    if volume is None:
        volume = density_grid(density_fn, resolution, bound, chunk)
    with torch.no_grad():
        vertices, faces = grid_to_mesh(volume, threshold, bound)
        colors = None if color_fn is None else torch.cat([color_fn(vertices[s:s + chunk]).float().cpu()
                                                          for s in range(0, len(vertices), chunk)])
    return Mesh(vertices, faces, colors, config=config)


def gaussian_colors_at(gaussians: Gaussians, points: torch.Tensor, k: int = 8,
                       min_scale: float = 0.005) -> torch.Tensor:
    """View-independent (DC) colour [N, 3] at points [N, 3]: the k nearest Gaussians' colours
    weighted by their density there (scales widened by min_scale, weights normalised in log space
    so a point off every Gaussian takes its closest one's colour)."""
    from scipy.spatial import cKDTree

    means = gaussians.means.detach()
    _, index = cKDTree(means.cpu().numpy()).query(points.detach().cpu().numpy(), k=min(k, len(means)))
    index = torch.as_tensor(index.reshape(len(points), -1), device=means.device)
    M, _ = _smoothed_inverse_covariance_factors(gaussians, min_scale)
    local = torch.einsum("nkij,nkj->nki", M[index], points[:, None].to(means) - means[index])
    logits = torch.log(gaussians.opacities.detach()[index]) - 0.5 * (local ** 2).sum(-1)
    colors = (gaussians.params["sh0"].detach()[:, 0] * C0 + 0.5).clamp(0, 1)
    return (torch.softmax(logits, -1)[..., None] * colors[index]).sum(1)


def gaussians_surface(gaussians: Gaussians, resolution: int = 128, bound: float = 0.6, threshold: float = 0.5,
                      smoothing: float = DENSITY_SMOOTHING) -> tuple[torch.Tensor, torch.Tensor]:
    """Marching cubes of the Gaussians' density (`gaussian_density_grid`) at `threshold`, enclosed
    cavities filled -> (vertices [M, 3], faces [K, 3])."""
    return grid_to_mesh(gaussian_density_grid(gaussians, resolution, bound, smoothing), threshold, bound)


def gaussians_to_mesh(gaussians: Gaussians, resolution: int = 128, bound: float = 0.6, threshold: float = 0.5,
                      smoothing: float = DENSITY_SMOOTHING, config: MeshConfig | None = None) -> Mesh:
    """`gaussians_surface` with vertex colours from `gaussian_colors_at` (scales widened as for
    the density)."""
    vertices, faces = gaussians_surface(gaussians, resolution, bound, threshold, smoothing)
    with torch.no_grad():
        colors = gaussian_colors_at(gaussians, vertices, min_scale=smoothing * 2 * bound / resolution)
    return Mesh(vertices, faces, colors, config=config)



__all__ = ["optional_import", "DENSITY_SMOOTHING", "gaussian_density_grid", "grid_to_mesh", "density_grid",
           "silhouette_level", "density_to_mesh", "gaussian_colors_at", "gaussians_surface", "gaussians_to_mesh"]
