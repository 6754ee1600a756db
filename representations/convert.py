"""Conversions between representations.

- mesh -> Gaussians: area-uniform surface samples carrying the surface colour, flat discs tangent
  to the surface (`mesh_to_gaussians`);
- Gaussians -> mesh: their opacity-weighted density on a grid, enclosed cavities filled, marching
  cubes, vertex colours from the nearest Gaussians (`gaussians_to_mesh`);
- any density field f(points [N, 3]) -> [N] (a NeRF's) -> mesh by marching cubes (`density_to_mesh`);
- mesh -> DMTet: the mesh's signed distance on the tetrahedral grid, the colour field fitted to
  surface colours (`mesh_to_dmtet`; a density field goes through `DMTet.from_density`);
- anything -> anything: render-and-fit distillation from random orbit cameras (`distill`);
- any representation -> a coloured surface `Mesh` (`to_mesh`), and the initialisation of a run's
  representation from another run's (`initialise_from`, the coarse -> fine stages of Magic3D).

Grids follow `tet_grid`: [R + 1]^3 vertices over [-bound, bound]^3, x slowest. Marching cubes
needs PyMCubes (`pip install pymcubes`, in the `mesh` extra).
"""

from __future__ import annotations

import importlib
import re
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sds3d.cameras import CameraSampler, Cameras, orbit_cameras, turntable_cameras
from sds3d.cuda._torch_gaussians import _quat_to_rotmat
from .base import Representation
from .dmtet import DMTet, DMTetConfig
from .gaussians import Gaussians, GaussiansConfig
from .mesh import Mesh, MeshConfig
from .spherical_harmonics import C0
from .tet_grid import grid_points


def optional_import(module: str, package: str):
    """Import an optional dependency of the mesh tools, or fail naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"this needs `{module}`: pip install {package} (or sds3d[mesh])") from error


def as_mesh(mesh, config: MeshConfig | None = None) -> Mesh:
    """A `Mesh`, or a trimesh.Trimesh converted to one."""
    return mesh if isinstance(mesh, Mesh) else Mesh.from_trimesh(mesh, config)


# ----- mesh -> Gaussians ---------------------------------------------------------------------------

def _quaternions_from_normals(normals: torch.Tensor) -> torch.Tensor:
    """Unit normals [N, 3] -> quaternions (w, x, y, z) [N, 4] of the shortest rotation taking +z
    to each normal (a half turn about x for -z)."""
    nx, ny, nz = normals.unbind(-1)
    quats = torch.stack([1 + nz, -ny, nx, torch.zeros_like(nz)], -1)
    flipped = 1 + nz < 1e-6
    quats[flipped] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=quats.dtype)
    return F.normalize(quats, dim=-1)


def mesh_to_gaussians(mesh, num_points: int = 20000, opacity: float = 0.95, scale: float = 0.7,
                      flatness: float = 0.1, config: GaussiansConfig | None = None,
                      generator: torch.Generator | None = None) -> Gaussians:
    """One flat Gaussian per area-uniform surface sample (a `Mesh` or trimesh), coloured by the
    surface there. With d = sqrt(area / num_points) the mean sample spacing, the in-plane standard
    deviation is `scale` d and the one along the normal `flatness` times that."""
    mesh = as_mesh(mesh)
    points, normals, colors, _, _ = mesh.sample_surface(num_points, generator)
    with torch.no_grad():
        corners = mesh.vertices[mesh.faces]
        area = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=-1).sum() / 2
    sigma = scale * float(torch.sqrt(area / num_points))
    scales = torch.tensor([sigma, sigma, flatness * sigma]).expand(num_points, 3)
    gaussians = Gaussians(points, colors, scales=scales, opacities=torch.full((num_points,), opacity), config=config)
    with torch.no_grad():
        gaussians.params["quats"].copy_(_quaternions_from_normals(normals))
    return gaussians


# ----- fields on grids -> meshes -------------------------------------------------------------------

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


# ----- rendered depth -> surfaces (open3d) ----------------------------------------------------------

SURFACE_METHODS = ("marching-cubes", "poisson", "tsdf")  # how `sds3d.export` meshes Gaussians

# shared libraries open3d's wheel loads that slim systems lack -> the Debian package that has them
_SYSTEM_LIBRARIES = {"libusb-1.0": "libusb-1.0-0", "libGL": "libgl1", "libgomp": "libgomp1", "libX11": "libx11-6"}


def import_open3d():
    """open3d, or an ImportError of one line naming the fix: the pip package, or the system
    library its wheel needs (e.g. libusb-1.0.so.0: apt-get install libusb-1.0-0)."""
    try:
        return importlib.import_module("open3d")
    except ImportError as error:
        missing = re.search(r"(lib[\w.+-]*?)\.so[\w.]*", str(error))
        if missing is None:
            raise ImportError("this needs `open3d`: pip install open3d-cpu (or sds3d[mesh])") from error
        package = next((v for k, v in _SYSTEM_LIBRARIES.items() if missing.group(1).startswith(k)),
                       f"the system package that provides {missing.group(0)}")
        raise ImportError(f"open3d cannot load {missing.group(0)}: apt-get install {package}") from error


def surface_views(n_views: int = 32, resolution: int = 256) -> Cameras:
    """`n_views` orbit cameras spread evenly over the whole sphere (a Fibonacci lattice, below the
    object too) at radius 2.5 with a 40 degree field of view, `resolution` pixels square."""
    index = torch.arange(n_views, dtype=torch.float32) + 0.5
    elevation = torch.rad2deg(torch.asin(1 - 2 * index / n_views))
    azimuth = (index * 180.0 * (3 - 5 ** 0.5) + 180.0) % 360.0 - 180.0  # golden angle steps
    return orbit_cameras(elevation, azimuth, 2.5, 40.0, resolution)


def rendered_depth(representation: Representation, cameras: Cameras, min_alpha: float = 0.5):
    """Per view: (depth [H, W] float32 numpy, camera-space z where alpha > min_alpha, else 0)."""
    with torch.no_grad():
        out = representation.render(cameras)
    depth = torch.where(out.alpha[..., 0] > min_alpha, out.depth[..., 0], torch.zeros(()))
    return [d.cpu().float().numpy() for d in depth]


def _intrinsic(o3d, cameras: Cameras, i: int):
    """open3d's intrinsics of camera i: open3d puts pixel (u, v)'s centre at (u, v), ours at + 0.5."""
    K = cameras.Ks[i].double()
    return o3d.camera.PinholeCameraIntrinsic(cameras.width, cameras.height, K[0, 0].item(), K[1, 1].item(),
                                             K[0, 2].item() - 0.5, K[1, 2].item() - 0.5)


def poisson_surface(representation: Representation, resolution: int = 128, bound: float = 0.6,
                    cameras: Cameras | None = None, trim: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """Screened Poisson reconstruction (open3d, octree depth log2(resolution)) of the points seen in
    rendered depth maps (`surface_views` by default), with normals estimated per view and turned
    towards its camera, thinned to one point per grid cell (2 bound / resolution). Vertices where
    the reconstruction had least support (quantile `trim` of its density) and outside the
    [-bound, bound]^3 box are dropped. -> (vertices [V, 3], faces [F, 3])."""
    o3d = import_open3d()
    cameras = cameras or surface_views()
    voxel = 2 * bound / resolution
    cloud = o3d.geometry.PointCloud()
    for i, depth in enumerate(rendered_depth(representation, cameras)):
        rgbd = o3d.geometry.Image(depth)
        view = o3d.geometry.PointCloud.create_from_depth_image(
            rgbd, _intrinsic(o3d, cameras, i), cameras.viewmats[i].double().numpy(), depth_scale=1.0, depth_trunc=100.0)
        if not view.has_points():
            continue
        view.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=3 * voxel, max_nn=30))
        view.orient_normals_towards_camera_location(cameras.centers[i].double().numpy())
        cloud += view
    if not cloud.has_points():
        raise ValueError("no surface: nothing is opaque (alpha > 0.5) in any rendered view")
    cloud = cloud.voxel_down_sample(voxel)
    cloud = cloud.select_by_index(np.flatnonzero(np.isfinite(np.asarray(cloud.normals)).all(1)))
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        mesh, density = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
            cloud, depth=max(5, int(np.ceil(np.log2(resolution)))), n_threads=1)
    density = np.asarray(density)
    vertices = np.asarray(mesh.vertices)
    drop = (density < np.quantile(density, trim)) | (np.abs(vertices) > bound).any(1)
    mesh.remove_vertices_by_mask(drop)
    return (torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32),
            torch.as_tensor(np.asarray(mesh.triangles), dtype=torch.int64))


def tsdf_surface(representation: Representation, resolution: int = 128, bound: float = 0.6,
                 cameras: Cameras | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """TSDF fusion (open3d's UniformTSDFVolume over [-bound, bound]^3 at `resolution` voxels a side,
    truncation 3 voxels) of rendered depth maps (`surface_views` by default), then its marching
    cubes. -> (vertices [V, 3], faces [F, 3]). (open3d 0.20's ScalableTSDFVolume extracts nothing
    on this CPU build, not even from a flat depth map.)"""
    o3d = import_open3d()
    cameras = cameras or surface_views()
    voxel = 2 * bound / resolution
    volume = o3d.pipelines.integration.UniformTSDFVolume(
        length=2 * bound, resolution=resolution, sdf_trunc=3 * voxel,
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8, origin=np.full((3, 1), -bound))
    for i, depth in enumerate(rendered_depth(representation, cameras)):
        blank = o3d.geometry.Image(np.zeros((*depth.shape, 3), np.uint8))
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            blank, o3d.geometry.Image(depth), depth_scale=1.0, depth_trunc=100.0, convert_rgb_to_intensity=False)
        volume.integrate(rgbd, _intrinsic(o3d, cameras, i), cameras.viewmats[i].double().numpy())
    mesh = volume.extract_triangle_mesh()
    if len(mesh.triangles) == 0:
        raise ValueError("no surface: nothing is opaque (alpha > 0.5) in any rendered view")
    return (torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32),
            torch.as_tensor(np.asarray(mesh.triangles), dtype=torch.int64))


# ----- mesh -> signed distance -> DMTet -------------------------------------------------------------

def _point_triangle_distance(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Euclidean distance [...] from points p [..., 3] to triangles (a, b, c) [..., 3]."""
    def dot(x, y):
        return (x * y).sum(-1)

    normal = torch.linalg.cross(b - a, c - a)
    def left_of(start, end):  # p on the inner side of the edge start -> end
        return dot(torch.linalg.cross(end - start, p - start), normal) >= 0

    inside = left_of(a, b) & left_of(b, c) & left_of(c, a) & (dot(normal, normal) > 0)
    plane = dot(p - a, normal).abs() / normal.norm(dim=-1).clamp(min=1e-30)

    def segment(start, end):
        t = (dot(p - start, end - start) / dot(end - start, end - start).clamp(min=1e-30)).clamp(0, 1)
        return (p - start - t[..., None] * (end - start)).norm(dim=-1)

    edges = torch.minimum(torch.minimum(segment(a, b), segment(b, c)), segment(c, a))
    return torch.where(inside, plane, edges)


def _upward_winding_numbers(vertices: torch.Tensor, faces: torch.Tensor, resolution: int, bound: float) -> torch.Tensor:
    """Winding number [R + 1]^3 of a closed, consistently oriented surface (overlapping closed parts
    add up) at the grid vertices, by signed crossings of the ray towards +z: a face whose normal
    points up counts +1, down -1. Rays are offset by a tiny irrational fraction of a cell so none
    passes exactly through an edge or vertex."""
    h, n = 2 * bound / resolution, resolution + 1
    jitter = h * 1e-4 * torch.tensor([2 ** 0.5, 3 ** 0.5], dtype=torch.float64)
    tri = vertices.double()[faces]  # [F, 3, 3]
    xy = (tri[..., :2] + bound - jitter) / h  # in column units
    lo = torch.ceil(xy.amin(1)).clamp(0, resolution).long()  # [F, 2]
    hi = torch.floor(xy.amax(1)).clamp(-1, resolution).long()
    counts = ((hi - lo + 1).clamp(min=0)).prod(-1)  # columns in each face's bounding box
    face = torch.repeat_interleave(torch.arange(len(faces)), counts)
    rank = torch.arange(len(face)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    width = (hi - lo + 1)[face, 1].clamp(min=1)
    column = lo[face] + torch.stack([rank // width, rank % width], -1)  # [P, 2]
    px, py = column[:, 0].double(), column[:, 1].double()
    cx, cy = xy[face, :, 0], xy[face, :, 1]  # [P, 3]
    # edge k (opposite corner k) evaluated at the column: 2D cross product
    x1, y1, x2, y2 = cx.roll(-1, -1), cy.roll(-1, -1), cx.roll(-2, -1), cy.roll(-2, -1)
    e = (x2 - x1) * (py[:, None] - y1) - (y2 - y1) * (px[:, None] - x1)
    area = e.sum(-1)
    hit = (((e >= 0).all(-1)) | ((e <= 0).all(-1))) & (area != 0)
    z = (e * tri[face, :, 2]).sum(-1) / torch.where(area != 0, area, 1.0)
    sign = torch.sign(area)
    column, z, sign = column[hit], z[hit], sign[hit]
    levels = torch.linspace(-bound, bound, n, dtype=torch.float64)
    above = torch.searchsorted(levels, z)  # crossing is above levels [0, above)
    hist = torch.zeros(n, n, n + 1, dtype=torch.float64)
    hist.index_put_((column[:, 0], column[:, 1], above), sign, accumulate=True)
    suffix = hist.flip(-1).cumsum(-1).flip(-1)  # suffix[m] = sum of hist[m:]
    return suffix[..., 1:]


def mesh_sdf_grid(vertices: torch.Tensor, faces: torch.Tensor, resolution: int, bound: float,
                  samples: int = 100000, candidates: int = 8, seed: int = 0, chunk: int = 1 << 15) -> torch.Tensor:
    """Signed distance [(R + 1)^3] (< 0 inside) of a closed mesh at `grid_points(R, bound)`.
    Sign: winding number > 1/2 (`_upward_winding_numbers`). Distance: exact point-triangle distance
    to the faces of the `candidates` surface samples nearest to each point (out of `samples`
    area-uniform ones), the minimum over those faces, `chunk` points at a time."""
    import trimesh
    from scipy.spatial import cKDTree

    vertices, faces = vertices.detach().cpu().double(), faces.cpu().long()
    winding = _upward_winding_numbers(vertices, faces, resolution, bound).reshape(-1)
    points = grid_points(resolution, bound).double()
    surface = trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=False)
    samples_xyz, sample_face = trimesh.sample.sample_surface(surface, samples, seed=seed)
    _, nearest = cKDTree(samples_xyz).query(points.numpy(), k=candidates)
    candidate = torch.as_tensor(sample_face[nearest.reshape(len(points), -1)])  # [N, k]
    distance = torch.cat([_point_triangle_distance(points[s:s + chunk, None],
                                                   *vertices[faces[candidate[s:s + chunk]]].unbind(-2)).amin(-1)
                          for s in range(0, len(points), chunk)])
    return torch.where(winding > 0.5, -distance, distance).float()


def mesh_to_dmtet(mesh, config: DMTetConfig | None = None, color_steps: int = 300, color_samples: int = 20000,
                  generator: torch.Generator | None = None) -> DMTet:
    """A DMTet whose SDF is the mesh's signed distance on its grid (`mesh_sdf_grid`) and whose
    colour field starts at the mean surface colour and is fitted (Adam, MSE, batches of 4096) to
    the colours of area-uniform surface samples."""
    mesh = as_mesh(mesh)
    config = config or DMTetConfig()
    sdf = mesh_sdf_grid(mesh.vertices, mesh.faces, config.resolution, config.bound)
    dmtet = DMTet(sdf, config)
    points, _, colors, _, _ = mesh.sample_surface(color_samples, generator)
    dmtet.color_field.init_color(colors.mean(0))
    optimizer = torch.optim.Adam(dmtet.color_field.parameters(), lr=config.lr_color)
    for _ in range(color_steps):
        batch = torch.randint(0, color_samples, (4096,), generator=generator)
        loss = F.mse_loss(dmtet.color_field(points[batch]), colors[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return dmtet


# ----- render-and-fit distillation -----------------------------------------------------------------

def distill(source: Representation, target: Representation, steps: int, sampler: CameraSampler | None = None,
            batch_size: int = 4, alpha_weight: float = 1.0, lr_scale: float = 1.0,
            generator: torch.Generator | None = None,
            callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Fit `target` to `source` by rendering both from the same random orbit cameras (PVD's final
    stage: the teacher's rendered RGB is the ground truth; representations of
    different kinds share no intermediate features, so only images are compared).

    Per step: B = batch_size cameras from `sampler`, one random background colour (so coverage is
    visible in rgb too), loss = MSE(rgb) + alpha_weight * MSE(alpha), one step of each of the
    target's optimisers (`make_optimizers(lr_scale)`) with its before_backward / after_step hooks
    (Gaussian densification keeps working). Returns the loss per step."""
    sampler = sampler or CameraSampler()
    optimizers = target.make_optimizers(lr_scale)
    device = next(target.parameters()).device
    losses = []
    for step in range(steps):
        cameras = sampler.sample(batch_size, generator).to(device)
        background = torch.rand(3, generator=generator).to(device)
        with torch.no_grad():
            teacher = source.render(cameras, background)
        student = target.render(cameras, background)
        loss = F.mse_loss(student.rgb, teacher.rgb) + alpha_weight * F.mse_loss(student.alpha, teacher.alpha)
        target.before_backward(step, student)
        for optimizer in optimizers.values():
            optimizer.zero_grad()
        loss.backward()
        for optimizer in optimizers.values():
            optimizer.step()
        target.after_step(step, student, optimizers)
        losses.append(loss.item())
        if callback is not None:
            callback(step, losses[-1])
    return losses


# ----- whole-representation conversions --------------------------------------------------------------

# NeRF densities (per unit length) tried as the surface when meshing: `to_mesh` keeps the one whose
# silhouettes match the NeRF's rendered alpha best (faint, light-coloured NeRFs need a low level).
NERF_SURFACE_DENSITIES = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 40.0)


def to_mesh(source: Representation, resolution: int = 128, bound: float = 0.6) -> Mesh:
    """A vertex-coloured surface mesh of any representation (a Mesh is returned as is)."""
    from .nerf import NeRF

    if isinstance(source, Mesh):
        return source
    if isinstance(source, Gaussians):
        return gaussians_to_mesh(source, resolution, bound)
    if isinstance(source, DMTet):
        with torch.no_grad():
            vertices, faces = source.extract_mesh()
            return Mesh(vertices, faces, source.color_field(vertices).clamp(0, 1))
    if isinstance(source, NeRF):
        volume = density_grid(source.density, resolution, bound)
        cameras = turntable_cameras(8, elevation=20.0, width=64)
        with torch.no_grad():
            alpha = source.render(cameras, shading="albedo").alpha
        level = silhouette_level(volume, bound, cameras, alpha, NERF_SURFACE_DENSITIES)
        return density_to_mesh(source.density, level, resolution, bound, color_fn=source.albedo, volume=volume)
    raise TypeError(f"cannot convert a {type(source).__name__} to a mesh")


def initialise_from(source: Representation, target: str, config, generator: torch.Generator | None = None,
                    distill_steps: int = 300) -> Representation:
    """A new `target` ("gaussians" | "mesh" (DMTet) | "nerf") with `config` (its config section),
    initialised from `source`: Gaussians from surface samples, DMTet from the surface's signed
    distance and colours, NeRF by render-and-fit distillation (`distill_steps` steps)."""
    from .nerf import NeRF

    if target == "gaussians":
        return mesh_to_gaussians(to_mesh(source), num_points=config.num_points, config=config, generator=generator)
    if target == "mesh":
        return mesh_to_dmtet(to_mesh(source, bound=config.bound), config, generator=generator)
    if target == "nerf":
        nerf = NeRF(config, generator)
        distill(source, nerf, distill_steps, generator=generator)
        return nerf
    raise ValueError(f"unknown representation {target!r}; choose gaussians, nerf or mesh")


__all__ = ["optional_import", "as_mesh", "mesh_to_gaussians", "gaussian_density_grid", "grid_to_mesh",
           "density_grid", "silhouette_level", "density_to_mesh", "gaussian_colors_at", "gaussians_surface",
           "gaussians_to_mesh", "SURFACE_METHODS", "import_open3d", "surface_views", "rendered_depth", "poisson_surface",
           "tsdf_surface", "mesh_sdf_grid", "mesh_to_dmtet", "distill", "to_mesh", "initialise_from"]
