"""Named colours of the micro-world and the paints of non-body parts.

Renders use Lambertian shading with brightness factors in [0.35, 1.0], so a colour must not turn
into another one when darkened: `shaded_distance` (the closest two colours can get under any two
such factors) is at least 0.1 for every pair of named colours. That rules out a gray next to white
(gray is shaded white) and a brown next to orange (brown is shaded orange), so neither is named.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHADING_RANGE = (0.35, 1.0)


@dataclass(frozen=True)
class ColorSpec:
    name: str
    rgb: tuple[float, float, float]  # linear albedo in [0, 1]
    synonyms: tuple[str, ...]  # other words for it in captions; the name itself is always allowed


COLORS: dict[str, ColorSpec] = {spec.name: spec for spec in (
    ColorSpec("red", (0.86, 0.10, 0.10), ("crimson", "scarlet", "ruby")),
    ColorSpec("orange", (1.00, 0.52, 0.05), ("tangerine", "amber")),
    ColorSpec("yellow", (0.96, 0.86, 0.12), ("golden", "gold", "lemon")),
    ColorSpec("green", (0.15, 0.70, 0.20), ("emerald", "lime")),
    ColorSpec("cyan", (0.10, 0.78, 0.85), ("teal", "turquoise", "aqua")),
    ColorSpec("blue", (0.12, 0.28, 0.92), ("azure", "cobalt", "navy")),
    ColorSpec("purple", (0.55, 0.20, 0.82), ("violet", "amethyst", "plum")),
    ColorSpec("pink", (1.00, 0.50, 0.72), ("rose", "rosy", "bubblegum")),
    ColorSpec("white", (0.96, 0.96, 0.96), ("ivory", "pearl", "snow white")),
    ColorSpec("black", (0.10, 0.10, 0.10), ("ebony", "onyx", "pitch black")),
)}

# Fixed colours of parts that do not take the object's named colour (door, trunk, screen, ...).
PART_PAINTS: dict[str, tuple[float, float, float]] = {
    "dark": (0.10, 0.10, 0.12),
    "light": (0.95, 0.93, 0.88),
    "wood": (0.45, 0.28, 0.14),
    "metal": (0.60, 0.62, 0.66),
    "clay": (0.78, 0.42, 0.26),
    "carrot": (1.00, 0.50, 0.10),
    "roof": (0.55, 0.16, 0.12),
    "window": (0.55, 0.80, 0.95),
    "headlight": (1.00, 0.95, 0.55),
    "taillight": (0.85, 0.05, 0.05),
    "trim": (0.85, 0.12, 0.12),
}
# A part paint is replaced by "dark", then "light", when it is closer than this (RGB distance) to
# the body colour, so that features such as a door or a nose always stand out.
PART_CONTRAST = 0.5


def shaded_distance(a, b) -> float:
    """Smallest RGB distance between colours `a` and `b` each shaded by any factor in SHADING_RANGE."""
    factors = np.linspace(*SHADING_RANGE, 66)[:, None]
    shaded_a, shaded_b = factors * np.asarray(a, float), factors * np.asarray(b, float)
    return float(np.linalg.norm(shaded_a[:, None] - shaded_b[None], axis=-1).min())


def part_rgb(paint: str, body_rgb) -> tuple[float, float, float]:
    """Colour of a part painted `paint` on an object whose named colour is `body_rgb`."""
    for candidate in (PART_PAINTS[paint], PART_PAINTS["dark"]):
        if np.linalg.norm(np.subtract(candidate, body_rgb)) >= PART_CONTRAST:
            return candidate
    return PART_PAINTS["light"]  # dark and light are 1.4 apart, so light is far from this body


def rgba8(rgb) -> np.ndarray:
    """[3] float colour in [0, 1] -> [4] uint8 RGBA, opaque, as stored in `mesh.visual.face_colors`."""
    return np.append(np.round(np.asarray(rgb, float) * 255), 255).astype(np.uint8)
