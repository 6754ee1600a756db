"""Ground-truth objects of the micro-world: one coloured mesh per (kind, colour).

Canonical frame: +z up, front facing +x (a camera at azimuth 0 sees the front), bounding-box centre
at the origin and largest bounding-box extent exactly 1, so every object fits in [-0.5, 0.5]^3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from .colors import COLORS, part_rgb, rgba8
from .kinds import BODY, KINDS


@dataclass
class WorldObject:
    kind: str
    color: str
    has_front: bool
    mesh: trimesh.Trimesh  # per-face colours in mesh.visual.face_colors (uint8 RGBA)


def check_name(name: str, valid, what: str) -> None:
    """Raise a ValueError listing the valid names if `name` is not one of them."""
    if name not in valid:
        raise ValueError(f"unknown {what} {name!r}; valid {what}s: {', '.join(valid)}")


def make_object(kind: str, color: str) -> WorldObject:
    """Build the object `kind` in the named `color` (deterministic) in the canonical frame.

    The mesh concatenates the kind's parts, each a watertight solid with outward normals; vertices of
    different parts are not merged. Parts painted "body" take the named colour.
    """
    check_name(kind, KINDS, "kind")
    check_name(color, COLORS, "color")
    spec, body_rgb = KINDS[kind], COLORS[color].rgb
    meshes = spec.builder()
    vertices, faces, face_colors, offset = [], [], [], 0
    for name, paint in spec.parts.items():
        part = meshes[name]
        rgb = body_rgb if paint == BODY else part_rgb(paint, body_rgb)
        vertices.append(part.vertices)
        faces.append(part.faces + offset)
        face_colors.append(np.tile(rgba8(rgb), (len(part.faces), 1)))
        offset += len(part.vertices)
    vertices = np.concatenate(vertices)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    vertices = (vertices - (lo + hi) / 2) / (hi - lo).max()
    mesh = trimesh.Trimesh(vertices, np.concatenate(faces), face_colors=np.concatenate(face_colors),
                           process=False)
    return WorldObject(kind, color, spec.has_front, mesh)
