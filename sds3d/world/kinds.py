"""The object kinds of the micro-world: geometry, parts and caption nouns.

Builders place parts in the world frame (+z up, front facing +x, so +y is on the right of a front
view) at any scale and position; `make_object` centres and rescales them. A builder
returns {part name: watertight mesh}; `KindSpec.parts` maps each part name to its paint: "body" (the
object's named colour) or a key of `PART_PAINTS`. Kinds without a front are mirror-symmetric in x,
so they look the same from the front and the back; kinds with a front carry contrasting features
(door, screen, face, headlights, cushions, ...) on their +x side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import trimesh
from trimesh.transformations import rotation_matrix, translation_matrix

from .shapes import box, capsule, cone, lathe, octahedron, prism, rod, sphere, square_pyramid, torus

BODY = "body"

Parts = dict[str, trimesh.Trimesh]


@dataclass(frozen=True)
class KindSpec:
    name: str
    synonyms: tuple[str, ...]  # caption nouns; the first is the canonical one
    has_front: bool
    builder: Callable[[], Parts]
    parts: dict[str, str]  # part name -> paint ("body" = the named colour, else a PART_PAINTS key)
    front: str = ""  # what marks the front (+x side), for kinds with a front

    @property
    def body_parts(self) -> tuple[str, ...]:
        """Parts painted in the object's named colour."""
        return tuple(name for name, paint in self.parts.items() if paint == BODY)


def _merge(*meshes: trimesh.Trimesh) -> trimesh.Trimesh:
    """Several disjoint or overlapping solids as one part (vertices are not merged)."""
    return trimesh.util.concatenate(meshes)


def _legs(x: float, y: float, half_width: float, height: float) -> trimesh.Trimesh:
    """Four square legs standing on the floor at (+-x, +-y)."""
    w = half_width
    corners = [(i * x, j * y) for i in (1, -1) for j in (1, -1)]
    return _merge(*(box((cx - w, cy - w, 0), (cx + w, cy + w, height)) for cx, cy in corners))


def _mirror_y(make: Callable[[float], trimesh.Trimesh]) -> trimesh.Trimesh:
    """A left/right pair: `make(side)` for side = +1 and -1."""
    return _merge(make(1.0), make(-1.0))


# Single primitives -------------------------------------------------------------------------------

def _cube() -> Parts:
    return {"body": box((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))}


def _sphere() -> Parts:
    return {"body": sphere((0, 0, 0), 0.5, subdivisions=3)}


def _cylinder() -> Parts:
    return {"body": rod((0, 0, 0), (0, 0, 1.0), 0.3, sections=48)}


def _cone() -> Parts:
    return {"body": cone((0, 0, 0), (0, 0, 1.0), 0.5, sections=48)}


def _torus() -> Parts:
    return {"body": torus((0, 0, 0), 0.35, 0.15)}


def _pyramid() -> Parts:
    return {"body": square_pyramid(0.5, 0.8)}


def _capsule() -> Parts:
    return {"body": capsule((0, -0.35, 0), (0, 0.35, 0), 0.22)}


def _octahedron() -> Parts:
    return {"body": octahedron(0.35, 0.35, 0.5)}


def _star() -> Parts:
    angles = np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 0.5, 0.2)
    outline = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    return {"body": prism(outline, 0.18, axes="yzx")}


# Composites without a front ----------------------------------------------------------------------

def _mushroom() -> Parts:
    arc = np.linspace(0, np.pi / 2, 9)[:-1]
    dome = [(0, 0.35), *zip(0.42 * np.cos(arc), 0.35 + 0.27 * np.sin(arc)), (0, 0.62)]
    return {
        "cap": lathe(dome),
        "stem": lathe([(0, 0), (0.14, 0), (0.11, 0.4), (0, 0.4)]),
    }


def _table() -> Parts:
    return {"frame": _merge(box((-0.35, -0.5, 0.5), (0.35, 0.5, 0.56)), _legs(0.29, 0.44, 0.03, 0.5))}


def _tree() -> Parts:
    lobes = [sphere((x, y, 0.62), 0.2) for x, y in ((0.22, 0), (-0.22, 0), (0, 0.22), (0, -0.22))]
    return {
        "crown": _merge(sphere((0, 0, 0.7), 0.3, subdivisions=3), sphere((0, 0, 0.92), 0.2), *lobes),
        "trunk": rod((0, 0, 0), (0, 0, 0.45), 0.07),
    }


def _pine_tree() -> Parts:
    tiers = ((0.15, 0.36, 0.4), (0.38, 0.28, 0.35), (0.58, 0.2, 0.32))  # base height, radius, height
    return {
        "needles": _merge(*(cone((0, 0, z), (0, 0, z + h), r) for z, r, h in tiers)),
        "trunk": rod((0, 0, 0), (0, 0, 0.18), 0.06),
    }


def _lamp() -> Parts:
    return {
        "shade": _merge(lathe([(0, 0.55), (0.34, 0.55), (0.2, 0.95), (0, 0.95)]),
                        rod((0, 0, 0), (0, 0, 0.05), 0.22)),
        "pole": rod((0, 0, 0.05), (0, 0, 0.56), 0.025),
    }


def _rocket() -> Parts:
    fin = [(0.14, 0.36), (0.14, 0.0), (0.3, -0.04), (0.3, 0.08)]  # (radius, height) in the xz-plane
    lift = translation_matrix([0, 0, 0.15])
    fins = [prism(fin, 0.03, axes="xzy").apply_transform(rotation_matrix(i * np.pi / 2, [0, 0, 1]) @ lift)
            for i in range(4)]
    return {
        "hull": _merge(rod((0, 0, 0.15), (0, 0, 0.85), 0.15), cone((0, 0, 0.85), (0, 0, 1.15), 0.15)),
        "fins": _merge(*fins),
        "nozzle": lathe([(0, 0.02), (0.11, 0.02), (0.08, 0.15), (0, 0.15)]),
    }


def _dumbbell() -> Parts:
    return {
        "weights": _mirror_y(lambda s: rod((0, 0.25 * s, 0), (0, 0.42 * s, 0), 0.2)),
        "bar": rod((0, -0.5, 0), (0, 0.5, 0), 0.04),
    }


def _hourglass() -> Parts:
    rims = [(0, 0), (0.3, 0), (0.3, 0.05), (0.27, 0.07)]
    return {"glass": lathe([*rims, (0.05, 0.45), *[(r, 0.9 - z) for r, z in reversed(rims)]])}


def _cactus() -> Parts:
    def arm(side, height, reach, rise):
        elbow, tip = (0, reach * side, height), (0, reach * side, height + rise)
        return _merge(rod((0, 0.1 * side, height), elbow, 0.07), capsule(elbow, tip, 0.07))

    trunk = capsule((0, 0, 0.3), (0, 0, 0.95), 0.12)
    return {
        "plant": _merge(trunk, arm(1, 0.5, 0.3, 0.25), arm(-1, 0.62, 0.26, 0.2)),
        "pot": lathe([(0, 0), (0.17, 0), (0.2, 0.22), (0, 0.22)]),
    }


# Composites with a front (+x) --------------------------------------------------------------------

def _snowman() -> Parts:
    head, middle = np.array([0, 0, 1.1]), np.array([0, 0, 0.76])

    def on_ball(center, radius, azimuth, elevation):
        a, e = np.radians(azimuth), np.radians(elevation)
        return center + radius * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])

    eyes = [sphere(on_ball(head, 0.14, 28 * s, 20), 0.04, subdivisions=1) for s in (1, -1)]
    buttons = [sphere(on_ball(middle, 0.2, 0, e), 0.05, subdivisions=1) for e in (35, 0, -35)]
    return {
        "balls": _merge(sphere((0, 0, 0.3), 0.3, subdivisions=3), sphere(middle, 0.21), sphere(head, 0.15)),
        "hat": _merge(rod((0, 0, 1.22), (0, 0, 1.25), 0.17), rod((0, 0, 1.24), (0, 0, 1.42), 0.11)),
        "coal": _merge(*eyes, *buttons),
        "nose": cone((0.13, 0, 1.08), (0.34, 0, 1.08), 0.045),
    }


def _chair() -> Parts:
    seat = box((-0.25, -0.25, 0.42), (0.25, 0.25, 0.48))
    backrest = box((-0.25, -0.25, 0.48), (-0.19, 0.25, 1.0))
    return {
        "frame": _merge(seat, backrest, _legs(0.2, 0.2, 0.025, 0.42)),
        "cushion": box((-0.19, -0.19, 0.56), (-0.15, 0.19, 0.92)),
    }


def _sofa() -> Parts:
    base = box((-0.3, -0.55, 0.06), (0.3, 0.55, 0.28))
    backrest = box((-0.3, -0.55, 0.28), (-0.16, 0.55, 0.7))
    arms = _mirror_y(lambda s: box((-0.3, 0.55 * s, 0.0), (0.3, 0.67 * s, 0.45)))
    seats = _mirror_y(lambda s: box((-0.16, 0.01 * s, 0.28), (0.3, 0.53 * s, 0.36)))
    return {
        "frame": _merge(base, backrest, arms, seats),
        "cushions": _mirror_y(lambda s: box((-0.16, 0.02 * s, 0.38), (-0.08, 0.52 * s, 0.64))),
    }


def _house() -> Parts:
    gable = [(-0.46, 0.7), (0.46, 0.7), (0.0, 1.0)]  # (x, z), extruded along y
    chimney = box((-0.28, 0.2, 0.8), (-0.16, 0.32, 1.05))
    return {
        "walls": _merge(box((-0.4, -0.5, 0), (0.4, 0.5, 0.7)), chimney),
        "roof": prism(gable, 1.08, axes="xzy"),
        "door": box((0.4, -0.1, 0), (0.43, 0.1, 0.38)),
        "windows": _mirror_y(lambda s: box((0.4, 0.2 * s, 0.32), (0.42, 0.36 * s, 0.48))),
    }


def _mug() -> Parts:
    corners = [(-0.28, 0, 0.56), (-0.46, 0, 0.56), (-0.46, 0, 0.18), (-0.28, 0, 0.18)]  # D-shaped handle
    return {
        "cup": lathe([(0, 0), (0.3, 0), (0.3, 0.7), (0.26, 0.7), (0.26, 0.05), (0, 0.05)]),
        "handle": _merge(*(capsule(a, b, 0.04) for a, b in zip(corners, corners[1:]))),
        "label": box((0.27, -0.13, 0.2), (0.315, 0.13, 0.5)),
    }


def _car() -> Parts:
    chassis = box((-0.5, -0.24, 0.1), (0.5, 0.24, 0.32))
    cabin = box((-0.3, -0.21, 0.32), (0.18, 0.21, 0.52))
    windshield = box((0.18, -0.18, 0.35), (0.2, 0.18, 0.5))
    rear_window = box((-0.32, -0.18, 0.35), (-0.3, 0.18, 0.5))
    side_windows = _mirror_y(lambda s: box((-0.26, 0.21 * s, 0.36), (0.14, 0.23 * s, 0.49)))
    wheels = [rod((x, 0.2 * s, 0.12), (x, 0.27 * s, 0.12), 0.12) for x in (-0.3, 0.3) for s in (1, -1)]
    return {
        "body": _merge(chassis, cabin),
        "wheels": _merge(*wheels),
        "windows": _merge(windshield, rear_window, side_windows),
        "grille": box((0.5, -0.08, 0.15), (0.515, 0.08, 0.27)),
        "headlights": _mirror_y(lambda s: box((0.5, 0.12 * s, 0.21), (0.52, 0.21 * s, 0.29))),
        "taillights": _mirror_y(lambda s: box((-0.52, 0.13 * s, 0.22), (-0.5, 0.22 * s, 0.28))),
    }


def _robot() -> Parts:
    legs = _mirror_y(lambda s: box((-0.08, 0.05 * s, 0), (0.08, 0.18 * s, 0.3)))
    torso = box((-0.14, -0.22, 0.3), (0.14, 0.22, 0.7))
    neck = rod((0, 0, 0.69), (0, 0, 0.75), 0.05)
    head = box((-0.13, -0.14, 0.74), (0.13, 0.14, 0.98))
    arms = _mirror_y(lambda s: box((-0.06, 0.22 * s, 0.36), (0.06, 0.31 * s, 0.66)))
    antenna = _merge(rod((0, 0, 0.97), (0, 0, 1.08), 0.015), sphere((0, 0, 1.1), 0.035))
    return {
        "body": _merge(legs, torso, neck, head, arms, antenna),
        "eyes": _mirror_y(lambda s: box((0.13, 0.03 * s, 0.84), (0.145, 0.1 * s, 0.9))),
        "panel": box((0.14, -0.12, 0.42), (0.155, 0.12, 0.6)),
    }


def _tv() -> Parts:
    cabinet = box((-0.09, -0.5, 0.14), (0.09, 0.5, 0.76))
    back = box((-0.2, -0.3, 0.25), (-0.09, 0.3, 0.65))
    stand = _merge(box((-0.05, -0.05, 0.04), (0.03, 0.05, 0.14)), box((-0.2, -0.22, 0), (0.12, 0.22, 0.04)))
    return {
        "housing": _merge(cabinet, back, stand),
        "screen": box((0.09, -0.38, 0.24), (0.1, 0.38, 0.66)),
    }


def _clock() -> Parts:
    bells = _mirror_y(lambda s: sphere((0, 0.27 * s, 0.86), 0.11))
    feet = _mirror_y(lambda s: sphere((0, 0.25 * s, 0.08), 0.06))
    hour_hand = box((0.16, -0.02, 0.43), (0.175, 0.02, 0.66))
    minute_hand = box((0.16, -0.02, 0.43), (0.175, 0.2, 0.47))
    return {
        "case": _merge(rod((-0.14, 0, 0.45), (0.14, 0, 0.45), 0.4, sections=48), bells, feet),
        "dial": rod((0.14, 0, 0.45), (0.16, 0, 0.45), 0.31, sections=48),
        "hands": _merge(hour_hand, minute_hand),
    }


def _airplane() -> Parts:
    fuselage = _merge(rod((-0.45, 0, 0), (0.3, 0, 0), 0.09), cone((0.3, 0, 0), (0.5, 0, 0), 0.09),
                      cone((-0.45, 0, 0), (-0.62, 0, 0.04), 0.09))
    wings = box((-0.1, -0.55, -0.035), (0.1, 0.55, 0.005))
    stabilizer = box((-0.58, -0.2, 0.0), (-0.47, 0.2, 0.02))
    fin = box((-0.58, -0.015, 0.04), (-0.47, 0.015, 0.28))
    engines = _mirror_y(lambda s: rod((-0.06, 0.3 * s, -0.08), (0.12, 0.3 * s, -0.08), 0.05))
    return {
        "hull": _merge(fuselage, wings, stabilizer, fin, engines),
        "windshield": box((0.3, -0.07, 0.04), (0.38, 0.07, 0.1)),
        "intakes": _mirror_y(lambda s: rod((0.12, 0.3 * s, -0.08), (0.13, 0.3 * s, -0.08), 0.04)),
    }


KINDS: dict[str, KindSpec] = {spec.name: spec for spec in (
    KindSpec("cube", ("cube", "box", "block"), False, _cube, {"body": BODY}),
    KindSpec("sphere", ("sphere", "ball", "orb"), False, _sphere, {"body": BODY}),
    KindSpec("cylinder", ("cylinder", "column", "pillar"), False, _cylinder, {"body": BODY}),
    KindSpec("cone", ("cone", "conical spike"), False, _cone, {"body": BODY}),
    KindSpec("torus", ("torus", "donut", "doughnut", "ring"), False, _torus, {"body": BODY}),
    KindSpec("pyramid", ("pyramid", "square pyramid"), False, _pyramid, {"body": BODY}),
    KindSpec("capsule", ("capsule", "pill"), False, _capsule, {"body": BODY}),
    KindSpec("octahedron", ("octahedron", "diamond", "gem"), False, _octahedron, {"body": BODY}),
    KindSpec("star", ("star", "five pointed star", "star shape"), False, _star, {"body": BODY}),
    KindSpec("mushroom", ("mushroom", "toadstool"), False, _mushroom, {"cap": BODY, "stem": "light"}),
    KindSpec("table", ("table", "dining table", "kitchen table"), False, _table, {"frame": BODY}),
    KindSpec("tree", ("tree", "oak tree", "leafy tree"), False, _tree, {"crown": BODY, "trunk": "wood"}),
    KindSpec("pine_tree", ("pine tree", "fir tree", "christmas tree", "pine"), False, _pine_tree,
             {"needles": BODY, "trunk": "wood"}),
    KindSpec("lamp", ("lamp", "table lamp", "desk lamp"), False, _lamp, {"shade": BODY, "pole": "metal"}),
    KindSpec("rocket", ("rocket", "rocket ship", "space rocket"), False, _rocket,
             {"hull": BODY, "fins": "trim", "nozzle": "dark"}),
    KindSpec("dumbbell", ("dumbbell", "hand weight"), False, _dumbbell, {"weights": BODY, "bar": "metal"}),
    KindSpec("hourglass", ("hourglass", "sand timer", "sandglass"), False, _hourglass, {"glass": BODY}),
    KindSpec("cactus", ("cactus", "potted cactus", "saguaro"), False, _cactus,
             {"plant": BODY, "pot": "clay"}),
    KindSpec("snowman", ("snowman", "snow man"), True, _snowman,
             {"balls": BODY, "hat": "dark", "coal": "dark", "nose": "carrot"},
             "face with coal eyes and a carrot nose, coal buttons"),
    KindSpec("chair", ("chair", "dining chair", "kitchen chair"), True, _chair,
             {"frame": BODY, "cushion": "light"},
             "seat open to the front, backrest at the back with a cushion on its front"),
    KindSpec("sofa", ("sofa", "couch", "settee"), True, _sofa,
             {"frame": BODY, "cushions": "light"},
             "seat open to the front, backrest at the back with cushions on its front"),
    KindSpec("house", ("house", "cottage", "cabin"), True, _house,
             {"walls": BODY, "roof": "roof", "door": "dark", "windows": "window"},
             "door and two windows on the front wall, chimney on the back slope"),
    KindSpec("mug", ("mug", "coffee mug", "cup"), True, _mug,
             {"cup": BODY, "handle": BODY, "label": "light"},
             "label on the front, handle at the back"),
    KindSpec("car", ("car", "automobile", "sedan"), True, _car,
             {"body": BODY, "wheels": "dark", "windows": "dark", "grille": "dark", "headlights": "headlight",
              "taillights": "taillight"},
             "grille and headlights at the front, cabin set back, taillights at the back"),
    KindSpec("robot", ("robot", "android", "droid"), True, _robot,
             {"body": BODY, "eyes": "light", "panel": "dark"},
             "eyes on the head and a chest panel"),
    KindSpec("tv", ("television", "tv", "tv set", "monitor"), True, _tv,
             {"housing": BODY, "screen": "dark"},
             "screen on the front, bulging back"),
    KindSpec("clock", ("alarm clock", "clock", "desk clock"), True, _clock,
             {"case": BODY, "dial": "light", "hands": BODY},
             "dial with hands on the front"),
    KindSpec("airplane", ("airplane", "plane", "aeroplane", "jet", "aircraft"), True, _airplane,
             {"hull": BODY, "windshield": "dark", "intakes": "dark"},
             "nose with a cockpit windshield and engine intakes at the front, tail fin at the back"),
)}


def fronted_kinds() -> list[str]:
    """Names of the kinds whose front (+x side) looks different from their back and sides."""
    return [name for name, spec in KINDS.items() if spec.has_front]
