"""Shape variants of the micro-world's kinds: other proportions, part sizes and colours.

A variant is built from its kind's parts (`sds3d.world.kinds`) with three random changes, then
normalised like `make_object` (canonical frame: +z up, front +x, centred, largest extent 1):

- proportions: the whole object stretched along x, y and z by independent factors in
  `PROPORTION_RANGE`;
- part sizes: each part stretched about its own bounding-box centre by independent factors per axis
  in `PART_RANGE` (kinds of one part get the proportions only);
- colour: the named body colour jittered by up to `COLOR_JITTER` per channel (parts in fixed paints
  keep them).

Every variant differs from its kind's canonical mesh (a draw that would come within
`MIN_DEPARTURE` of it is stretched again), so a library of variants never holds the suite's exact
objects. `make_variant(kind, color, seed)` is deterministic; `write_microworld_library` writes a
library folder of GLBs with captions ("a red mug") and tags (kind, colour, variant).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import trimesh

from .colors import COLORS, part_rgb, rgba8
from .kinds import BODY, KINDS
from .objects import WorldObject, check_name, make_object

PROPORTION_RANGE = (0.75, 1.3)
PART_RANGE = (0.8, 1.25)
COLOR_JITTER = 0.04
MIN_DEPARTURE = 0.02  # largest vertex displacement from the canonical object, in object units


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size) -> np.ndarray:
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    return np.exp(rng.uniform(lo, hi, size))


def _normalised(vertices: np.ndarray) -> np.ndarray:
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    return (vertices - (lo + hi) / 2) / (hi - lo).max()


def _draw(kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Stretched vertices of each part ([V_p, 3] in the kind's part order), before normalisation."""
    spec = KINDS[kind]
    parts = spec.builder()
    proportions = _log_uniform(rng, PROPORTION_RANGE, 3)
    stretched = []
    for name in spec.parts:
        vertices = np.asarray(parts[name].vertices, dtype=np.float64)
        if len(spec.parts) > 1:
            centre = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
            vertices = centre + (vertices - centre) * _log_uniform(rng, PART_RANGE, 3)
        stretched.append(vertices * proportions)
    return stretched


def make_variant(kind: str, color: str, seed: int) -> WorldObject:
    """A random variant of `kind` painted `color` (deterministic for `seed`), in the canonical frame;
    per-face colours as `make_object`'s."""
    check_name(kind, KINDS, "kind")
    check_name(color, COLORS, "color")
    spec = KINDS[kind]
    rng = np.random.default_rng([seed, list(KINDS).index(kind), list(COLORS).index(color)])
    canonical = make_object(kind, color).mesh
    parts = spec.builder()
    while True:
        stretched = _draw(kind, rng)
        vertices = _normalised(np.concatenate(stretched))
        if np.abs(vertices - np.asarray(canonical.vertices)).max() >= MIN_DEPARTURE:
            break
    body_rgb = np.clip(np.asarray(COLORS[color].rgb) + rng.uniform(-COLOR_JITTER, COLOR_JITTER, 3), 0, 1)
    faces, face_colors, offset = [], [], 0
    for name, part_vertices in zip(spec.parts, stretched):
        paint = spec.parts[name]
        rgb = body_rgb if paint == BODY else part_rgb(paint, COLORS[color].rgb)
        faces.append(np.asarray(parts[name].faces) + offset)
        face_colors.append(np.tile(rgba8(rgb), (len(parts[name].faces), 1)))
        offset += len(part_vertices)
    mesh = trimesh.Trimesh(vertices, np.concatenate(faces), face_colors=np.concatenate(face_colors), process=False)
    return WorldObject(kind, color, spec.has_front, mesh)


def write_microworld_library(directory: str | Path, variants: int, seed: int = 0, kinds: list[str] | None = None,
                             colors: list[str] | None = None, progress: bool = True) -> Path:
    """A library folder of `variants` shape variants of each kind (default all 28), each in a
    random named colour (from `colors`, default all 10), as `<kind>_<i>.glb` (+Y up, front +Z,
    `sds3d.export.save_trimesh`) and `library.jsonl` with captions "a red mug" and tags
    {"kind", "color", "variant"}. Returns the folder; `library.jsonl` is written last, atomically."""
    from tqdm.auto import tqdm

    from sds3d.export import save_trimesh

    from .captions import canonical_caption

    kinds = list(KINDS) if kinds is None else list(kinds)
    colors = list(COLORS) if colors is None else list(colors)
    for kind in kinds:
        check_name(kind, KINDS, "kind")
    for color in colors:
        check_name(color, COLORS, "color")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    jobs = [(kind, i) for kind in kinds for i in range(variants)]
    for kind, i in tqdm(jobs, desc="micro-world variants", unit="asset", disable=not progress):
        color = colors[int(rng.integers(len(colors)))]
        variant = make_variant(kind, color, seed=seed * 100_003 + i)
        file = f"{kind}_{i}.glb"
        save_trimesh(variant.mesh, directory / file)
        lines.append(json.dumps({"file": file, "caption": canonical_caption(kind, color),
                                 "tags": {"kind": kind, "color": color, "variant": i}}))
    temporary = directory / f".library.jsonl.tmp{os.getpid()}"
    temporary.write_text("\n".join(lines) + "\n")
    os.replace(temporary, directory / "library.jsonl")
    return directory


__all__ = ["PROPORTION_RANGE", "PART_RANGE", "COLOR_JITTER", "MIN_DEPARTURE", "make_variant",
           "write_microworld_library"]
