"""Solid building blocks for the catalogue, placed directly in the world frame (+z up, front +x).

Every helper returns one watertight `trimesh.Trimesh` with outward normals (positive volume).
Lengths are in arbitrary units: `make_object` rescales each finished object to unit size.
"""

from __future__ import annotations

import numpy as np
import trimesh
from trimesh import creation
from trimesh.geometry import align_vectors
from trimesh.transformations import rotation_matrix, translation_matrix


def _outward(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Flip the winding if the normals point inwards."""
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def _along(start, end) -> tuple[np.ndarray, float]:
    """Transform taking the local +z axis (centred at the origin) onto segment start->end, and its length."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    direction = end - start
    length = float(np.linalg.norm(direction))
    transform = align_vectors([0.0, 0.0, 1.0], direction / length)
    transform[:3, 3] = (start + end) / 2
    return transform, length


def box(lo, hi) -> trimesh.Trimesh:
    """Axis-aligned box spanning opposite corners `lo` and `hi` (in any order)."""
    return creation.box(bounds=np.sort(np.array([lo, hi], float), axis=0))


def sphere(center, radius: float, subdivisions: int = 2, stretch=(1.0, 1.0, 1.0)) -> trimesh.Trimesh:
    """Icosphere, optionally stretched per axis into an ellipsoid."""
    mesh = creation.icosphere(subdivisions=subdivisions, radius=radius)
    mesh.apply_scale(stretch)
    mesh.apply_translation(center)
    return mesh


def rod(start, end, radius: float, sections: int = 32) -> trimesh.Trimesh:
    """Cylinder from point `start` to point `end`."""
    return creation.cylinder(radius=radius, segment=np.array([start, end], float), sections=sections)


def capsule(start, end, radius: float) -> trimesh.Trimesh:
    """Cylinder from `start` to `end` with hemispherical caps beyond both points."""
    transform, length = _along(start, end)
    return creation.capsule(height=length, radius=radius, count=[16, 16], transform=transform)


def cone(base, tip, radius: float, sections: int = 32) -> trimesh.Trimesh:
    """Right circular cone with base centre `base` and apex `tip`."""
    transform, length = _along(base, tip)
    transform = transform @ translation_matrix([0.0, 0.0, -length / 2])
    return creation.cone(radius=radius, height=length, sections=sections, transform=transform)


def lathe(profile, base=(0.0, 0.0, 0.0), sections: int = 48) -> trimesh.Trimesh:
    """Surface of revolution about the vertical axis through `base`.

    `profile` is a polyline of (radius, height) points that starts and ends on the axis (radius 0).
    """
    mesh = creation.revolve(np.asarray(profile, float), sections=sections)
    mesh.apply_translation(base)
    return _outward(mesh)


def torus(center, major_radius: float, minor_radius: float) -> trimesh.Trimesh:
    """Torus lying flat (axis +z)."""
    mesh = creation.torus(major_radius, minor_radius, major_sections=40, minor_sections=20)
    mesh.apply_translation(center)
    return mesh


def prism(polygon, depth: float, axes: str = "yzx") -> trimesh.Trimesh:
    """Flat polygon extruded symmetrically about its plane.

    `polygon` is a list of 2D points, star-shaped around its vertex mean (it is fan-triangulated from
    there). `axes` names the world axes of the polygon's first and second coordinate and of the
    extrusion: "yzx" draws in the yz-plane and extrudes along x.
    """
    points = np.asarray(polygon, float)
    count = len(points)
    vertices = np.vstack([points.mean(axis=0), points])
    faces = [[0, 1 + i, 1 + (i + 1) % count] for i in range(count)]
    mesh = creation.extrude_triangulation(vertices, faces, depth)
    mesh.apply_translation([0.0, 0.0, -depth / 2])
    mesh.vertices = mesh.vertices[:, np.argsort(["xyz".index(a) for a in axes])]
    return _outward(mesh)


def octahedron(rx: float, ry: float, rz: float) -> trimesh.Trimesh:
    """Octahedron with its six vertices on the coordinate axes at the given half-extents."""
    vertices = [[rx, 0, 0], [-rx, 0, 0], [0, ry, 0], [0, -ry, 0], [0, 0, rz], [0, 0, -rz]]
    faces = [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]
    return _outward(trimesh.Trimesh(vertices, faces))


def square_pyramid(half_width: float, height: float) -> trimesh.Trimesh:
    """Pyramid on a square base (edges along x and y) centred at the origin, apex up."""
    mesh = creation.cone(radius=half_width * np.sqrt(2.0), height=height, sections=4)
    mesh.apply_transform(rotation_matrix(np.pi / 4, [0.0, 0.0, 1.0]))
    return mesh
