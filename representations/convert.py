"""Conversions between representations: the API that gathers them.

- mesh -> Gaussians: flat discs on area-uniform surface samples (`mesh_to_gaussians`, in `gaussians`);
- any representation -> a coloured surface `Mesh`: its `to_mesh()` method (built from `meshing`:
  marching cubes of a density, Gaussians' density splatted on a grid);
- Gaussians (or anything rendered) -> a surface from rendered depth maps (open3d): `poisson_surface`,
  `tsdf_surface`;
- mesh -> DMTet: the mesh's signed distance on the tetrahedral grid, the colour field fitted to
  surface colours (`mesh_to_dmtet`, in `dmtet`; the distance from `mesh_sdf`);
- anything -> anything: render-and-fit distillation from random orbit cameras (`distill`);
- a run's representation initialised from another run's (`initialise_from`, the coarse -> fine stages
  of Magic3D): each registered representation's `initialise_from` class method.
"""

from __future__ import annotations

import importlib
import re

import numpy as np
import torch

from sds3d.cameras import Cameras, orbit_cameras
from .base import Representation
from .distill import distill
from .dmtet import mesh_to_dmtet
from .gaussians import mesh_to_gaussians
from .mesh import as_mesh
from .meshing import (DENSITY_SMOOTHING, density_grid, density_to_mesh, gaussian_colors_at, gaussian_density_grid,
                      gaussians_surface, gaussians_to_mesh, grid_to_mesh, optional_import, silhouette_level)
from .mesh_sdf import mesh_sdf_grid
from .registry import representation_entry


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



# ----- whole representations -------------------------------------------------------------------------

def initialise_from(source: Representation, target: str, config, generator: torch.Generator | None = None,
                    distill_steps: int = 300) -> Representation:
    """A new representation `target` (a registered name or alias: "gaussians" | "nerf" | "dmtet") with
    `config` (its config section), initialised from `source` by the target's `initialise_from`:
    Gaussians from surface samples, DMTet from the surface's signed distance and colours, NeRF by
    render-and-fit distillation (`distill_steps` steps)."""
    return representation_entry(target).cls.initialise_from(source, config, generator, distill_steps)


__all__ = ["optional_import", "as_mesh", "mesh_to_gaussians", "DENSITY_SMOOTHING", "gaussian_density_grid",
           "grid_to_mesh", "density_grid", "silhouette_level", "density_to_mesh", "gaussian_colors_at",
           "gaussians_surface", "gaussians_to_mesh", "SURFACE_METHODS", "import_open3d", "surface_views",
           "rendered_depth", "poisson_surface", "tsdf_surface", "mesh_sdf_grid", "mesh_to_dmtet", "distill", "initialise_from"]
