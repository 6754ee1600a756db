"""Renders of micro-world objects with per-pixel part labels, for training a part-aware 2D teacher.

Each sample is one (kind, colour) object seen by one random orbit camera under one random
directional light, exactly as `sds3d.world.dataset` draws them for the prior (`sample_views`, the
same Lambertian shading), rendered at R x R (64 by default) with 2x2 supersampling. Besides the
colour it keeps:

- alpha [R, R]: the object's coverage (so training can composite any background);
- labels [R, R]: the part seen at each pixel as an index into `part_names()` (0 = "background"),
  the majority of the pixel's 2x2 supersamples (a tie between the background and a part goes to the
  part). A sample's part is the part owning the visible triangle: `make_object` concatenates the
  kind's part meshes in `KindSpec.parts` order, so face ranges follow the parts' face counts
  (`face_part_labels`).

`load_or_render_parts(name, n, seed)` caches the dataset as a .pt file under the data directory
($SDS3D_DATA_DIR), written atomically. `PART_SEEDS` are apart from the prior's and evaluator's seeds.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sds3d.cameras import orbit_cameras

from .dataset import AMBIENT, DIFFUSE, SEEDS, RenderedViews, balanced_pairs, data_dir, render_by_pair, sample_views

# Seeds of the part datasets; none is one of `sds3d.world.dataset.SEEDS`.
PART_SEEDS = {"train": 6000, "val": 6500, "benchmark": 7000, "tests": 7500, "splat_train": 6100, "splat_val": 6600,
              "splat_benchmark": 7100}
assert not set(PART_SEEDS.values()) & set(SEEDS.values())

PART_RESOLUTION = 64
BACKGROUND = "background"
FORMAT_VERSION = 1


@lru_cache(maxsize=None)
def part_names() -> tuple[str, ...]:
    """Global label names: "background", then "<kind>/<part>" for every kind in catalogue order."""
    from . import KINDS

    return (BACKGROUND, *(f"{kind}/{part}" for kind, spec in KINDS.items() for part in spec.parts))


def part_label(kind: str, part: str) -> int:
    """Global label index of `part` of `kind`."""
    return part_names().index(f"{kind}/{part}")


@lru_cache(maxsize=None)
def face_part_labels(kind: str) -> np.ndarray:
    """[F] global part label of each face of `make_object(kind, ...)`'s mesh (parts in order)."""
    from . import KINDS

    spec = KINDS[kind]
    meshes = spec.builder()
    return np.concatenate([np.full(len(meshes[part].faces), part_label(kind, part), dtype=np.int64)
                           for part in spec.parts])


@lru_cache(maxsize=64)
def _object_mesh(kind: str, color: str):
    from . import make_object

    return make_object(kind, color).mesh


def world_lights(cameras, light_cam) -> torch.Tensor:
    """Light directions given in camera coordinates (x right, y up, z towards the viewer) [B, 3] ->
    world unit vectors [B, 3] (the convention of `sds3d.world.dataset.render_views`)."""
    light_cam = torch.as_tensor(np.asarray(light_cam), dtype=torch.float32).reshape(len(cameras), 3)
    rotation = cameras.viewmats[:, :3, :3]  # OpenCV rows: right, down, forward in world coordinates
    right, down, forward = rotation[:, 0], rotation[:, 1], rotation[:, 2]
    return F.normalize(light_cam[:, :1] * right - light_cam[:, 1:2] * down - light_cam[:, 2:3] * forward, dim=-1)


def majority_labels(face_labels: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, H*f, W*f] int64 labels (0 = background) -> [B, H, W]: the most frequent label of each
    f x f block; ties go to the smaller foreground label, background only when it is the sole winner."""
    B, Hf, Wf = face_labels.shape
    blocks = face_labels.reshape(B, Hf // factor, factor, Wf // factor, factor).transpose(2, 3)
    blocks = blocks.reshape(B, Hf // factor, Wf // factor, factor * factor)
    counts = F.one_hot(blocks, int(face_labels.max()) + 1).sum(-2).float()  # [B, H, W, L]
    counts[..., 0] -= 0.5  # a tie with the background goes to the part
    # argmax returns the first maximum, so among tied parts the smaller label wins.
    return counts.argmax(-1)


def render_part_views(kind: str, color: str, elevation, azimuth, radius, fovy, light_cam,
                      resolution: int = PART_RESOLUTION) -> dict[str, torch.Tensor]:
    """Render one object from B orbit cameras with part labels.

    Returns rgb [B, 3, R, R] in [0, 1] over white, alpha [B, 1, R, R] in [0, 1] and labels [B, R, R]
    int64 (global part labels, 0 = background), R = `resolution` (supersampled 2x)."""
    from sds3d.cuda.mesh_rasterizer import render_trimesh

    cameras = orbit_cameras(elevation, azimuth, radius, fovy, resolution)
    out = render_trimesh(_object_mesh(kind, color), cameras, light_dirs=world_lights(cameras, light_cam),
                         ambient=AMBIENT, diffuse=DIFFUSE, background=(1.0, 1.0, 1.0), antialias=True)
    face_ids = out.meta["fragments"].face_ids  # [B, 2R, 2R], -1 on background
    table = torch.as_tensor(np.concatenate([[0], face_part_labels(kind)]))
    labels = majority_labels(table[face_ids + 1], 2)
    return {"rgb": out.rgb.permute(0, 3, 1, 2).clamp(0, 1), "alpha": out.alpha.permute(0, 3, 1, 2).clamp(0, 1),
            "labels": labels}


@dataclass
class PartDataset(RenderedViews):
    """Renders with part labels (names in `parts`, global labels)."""

    alpha: torch.Tensor  # [N, 1, R, R] uint8 coverage (255 = object)
    labels: torch.Tensor  # [N, R, R] uint8 index into `parts` (0 = background)
    parts: list[str]

    format_version = FORMAT_VERSION

    def concatenated(self, other: "PartDataset") -> "PartDataset":
        """This dataset's samples followed by `other`'s (same kinds, colours and parts); keeps this seed."""
        if (self.kinds, self.colors, self.parts) != (other.kinds, other.colors, other.parts):
            raise ValueError("part datasets of different catalogues cannot be concatenated")
        tensors = {f.name: torch.cat([getattr(self, f.name), getattr(other, f.name)])
                   for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **tensors)

    def composite(self, index, background: torch.Tensor | None = None) -> torch.Tensor:
        """Images [n, 3, R, R] float in [0, 1] over `background` ([n, 3] or [3] RGB; None = white)."""
        rgb, alpha = self.images[index].float() / 255.0, self.alpha[index].float() / 255.0
        if background is None:
            return rgb
        background = torch.as_tensor(background, dtype=torch.float32).reshape(-1, 3, 1, 1)
        # The stored colour is c * a + 1 - a over white: swap the white for the background.
        return (rgb - (1 - alpha) + (1 - alpha) * background).clamp(0, 1)


def render_part_dataset(n: int, seed: int, resolution: int = PART_RESOLUTION, kinds: list[str] | None = None,
                        colors: list[str] | None = None, progress: bool = False, chunk: int = 32) -> PartDataset:
    """n labelled renders, deterministic for `seed`; (kind, colour) pairs balanced as in
    `sds3d.world.dataset.render_dataset` (every pair floor(n / pairs) or one more times)."""
    from . import COLORS, KINDS

    all_kinds, all_colors = list(KINDS), list(COLORS)
    kinds = all_kinds if kinds is None else list(kinds)
    colors = all_colors if colors is None else list(colors)
    rng = np.random.default_rng(seed)
    kind_idx, color_idx = balanced_pairs(n, rng, kinds, colors, all_kinds, all_colors)
    params = sample_views(n, rng)

    R = resolution
    images = torch.empty(n, 3, R, R, dtype=torch.uint8)
    alpha = torch.empty(n, 1, R, R, dtype=torch.uint8)
    labels = torch.empty(n, R, R, dtype=torch.uint8)

    def render(k: int, c: int, idx: np.ndarray) -> None:
        out = render_part_views(all_kinds[k], all_colors[c], params["elevation"][idx], params["azimuth"][idx],
                                params["radius"][idx], params["fovy"][idx], params["light"][idx], R)
        where = torch.as_tensor(idx)
        images[where] = (out["rgb"] * 255.0).round().to(torch.uint8)
        alpha[where] = (out["alpha"] * 255.0).round().to(torch.uint8)
        labels[where] = out["labels"].to(torch.uint8)

    render_by_pair(kind_idx, color_idx, render, chunk, f"render parts seed {seed}", progress)
    as_float = lambda key: torch.as_tensor(params[key], dtype=torch.float32)  # noqa: E731
    return PartDataset(images=images, alpha=alpha, labels=labels, kind=torch.as_tensor(kind_idx),
                       color=torch.as_tensor(color_idx), elevation=as_float("elevation"),
                       azimuth=as_float("azimuth"), radius=as_float("radius"), fovy=as_float("fovy"),
                       parts=list(part_names()), kinds=all_kinds, colors=all_colors, seed=seed)


def load_or_render_parts(name: str, n: int, seed: int, directory: str | Path | None = None,
                         progress: bool = True, resolution: int = PART_RESOLUTION,
                         render=None) -> PartDataset:
    """The cached dataset `<data_dir>/<name>-n<n>-s<seed>-r<resolution>-v<format>.pt`, rendered by
    `render(n, seed, resolution, progress=...)` (default `render_part_dataset`) and saved atomically
    if absent or stale (the catalogue's kinds, colours or parts changed)."""
    from . import COLORS, KINDS

    directory = Path(directory) if directory is not None else data_dir()
    path = directory / f"{name}-n{n}-s{seed}-r{resolution}-v{FORMAT_VERSION}.pt"
    if path.exists():
        state = torch.load(path, weights_only=True)
        if (state.get("version") == FORMAT_VERSION and state.get("parts") == list(part_names())
                and state.get("kinds") == list(KINDS) and state.get("colors") == list(COLORS)):
            return PartDataset.from_state(state)
    t0 = time.time()
    data = (render or render_part_dataset)(n, seed, resolution, progress=progress)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".pt.tmp{os.getpid()}")
    torch.save(data.state(), tmp)
    os.replace(tmp, path)
    if progress:
        print(f"rendered {n} labelled images (seed {seed}) in {time.time() - t0:.0f} s -> {path}", flush=True)
    return data


# Phrases ------------------------------------------------------------------------------------------
# A concept is a set of part labels (optionally of one colour) with the phrases that name it. Part
# nouns: the part's name first (the "the <part>" queries), then synonyms.
PART_NOUNS: dict[str, dict[str, tuple[str, ...]]] = {
    "mushroom": {"cap": ("cap", "mushroom cap"), "stem": ("stem", "stalk")},
    "table": {"frame": ("frame", "tabletop and legs")},
    "tree": {"crown": ("crown", "leaves", "foliage"), "trunk": ("trunk", "tree trunk")},
    "pine_tree": {"needles": ("needles", "branches"), "trunk": ("trunk", "tree trunk")},
    "lamp": {"shade": ("shade", "lampshade"), "pole": ("pole", "lamp post")},
    "rocket": {"hull": ("hull", "fuselage"), "fins": ("fins", "tail fins"), "nozzle": ("nozzle", "exhaust")},
    "dumbbell": {"weights": ("weights", "weight plates"), "bar": ("bar", "grip")},
    "hourglass": {"glass": ("glass",)},
    "cactus": {"plant": ("plant", "cactus plant"), "pot": ("pot", "flower pot")},
    "snowman": {"balls": ("balls", "snowballs"), "hat": ("hat", "top hat"), "coal": ("coal", "coal buttons"),
                "nose": ("nose", "carrot nose")},
    "chair": {"frame": ("frame", "seat and legs"), "cushion": ("cushion", "back cushion")},
    "sofa": {"frame": ("frame", "couch frame"), "cushions": ("cushions", "back cushions")},
    "house": {"walls": ("walls", "house walls"), "roof": ("roof", "rooftop"), "door": ("door", "front door"),
              "windows": ("windows",)},
    "mug": {"cup": ("cup", "mug body"), "handle": ("handle",), "label": ("label", "sticker")},
    "car": {"body": ("body", "car body"), "wheels": ("wheels", "tires"), "windows": ("windows", "car windows"),
            "grille": ("grille", "radiator grille"), "headlights": ("headlights", "front lights"),
            "taillights": ("taillights", "rear lights")},
    "robot": {"body": ("body", "robot body"), "eyes": ("eyes",), "panel": ("panel", "chest panel")},
    "tv": {"housing": ("housing", "casing"), "screen": ("screen", "display")},
    "clock": {"case": ("case", "clock case"), "dial": ("dial", "clock face"), "hands": ("hands", "clock hands")},
    "airplane": {"hull": ("hull", "fuselage"), "windshield": ("windshield", "cockpit window"),
                 "intakes": ("intakes", "engine intakes")},
}
BACKGROUND_PHRASES = ("the background", "background", "the backdrop", "the empty background")
PART_TEMPLATES = ("the {kind}'s {part}", "the {part} of the {kind}", "the {kind} {part}", "{part} of the {kind}",
                  "a {kind} {part}")
GENERIC_PART_TEMPLATES = ("the {part}", "{part}")
OBJECT_TEMPLATES = ("the {kind}", "a {kind}", "{kind}", "the whole {kind}", "the entire {kind}")
COLORED_OBJECT_TEMPLATES = ("a {color} {kind}", "the {color} {kind}")
# Never used in training: the benchmark's unseen phrasing of each part.
HELD_OUT_PART_TEMPLATE = "the {part} on this {kind}"


@dataclass(frozen=True)
class Concept:
    """Phrases naming the pixels whose part label is in `labels` (and, if `color` is set, whose
    object has that colour)."""

    name: str
    phrases: tuple[str, ...]
    labels: frozenset[int]
    color: str | None = None


def part_nouns(kind: str, part: str) -> tuple[str, ...]:
    """Nouns for a part: its name first (single-part primitives: "body")."""
    return PART_NOUNS.get(kind, {}).get(part, (part,))


def kind_nouns(kind: str) -> tuple[str, ...]:
    """The kind's caption nouns, minus any that is also a part noun ("cup" is the mug's cup part)."""
    from . import KINDS

    parts = {noun for k, spec in KINDS.items() for p in spec.parts for noun in part_nouns(k, p)}
    return tuple(noun for noun in KINDS[kind].synonyms if noun not in parts)


def part_phrases(kind: str, part: str) -> tuple[str, ...]:
    """Training phrasings of one part of one kind (without the generic "the <part>")."""
    return tuple(dict.fromkeys(template.format(kind=k, part=p) for template in PART_TEMPLATES
                               for k in kind_nouns(kind) for p in part_nouns(kind, part)))


def held_out_phrase(kind: str, part: str) -> str:
    """A phrasing of the part that no training concept uses."""
    return HELD_OUT_PART_TEMPLATE.format(part=part_nouns(kind, part)[0], kind=kind_nouns(kind)[0])


@lru_cache(maxsize=None)
def part_concepts() -> tuple[Concept, ...]:
    """Every training concept: the background; each kind's parts (specific phrasings); each part noun
    (generic "the <noun>", over every kind whose part has that noun); each kind as a whole; each
    kind in each colour."""
    from . import COLORS, KINDS

    generic: dict[str, set[int]] = {}
    for kind, spec in KINDS.items():
        for part in spec.parts:
            for noun in part_nouns(kind, part):
                generic.setdefault(noun, set()).add(part_label(kind, part))
    generic_concepts = [Concept(f"part:{noun}", tuple(t.format(part=noun) for t in GENERIC_PART_TEMPLATES),
                                frozenset(labels)) for noun, labels in generic.items()]
    # A specific phrasing that is also a generic one ("the tree trunk") keeps the generic meaning.
    taken = {phrase for concept in generic_concepts for phrase in concept.phrases}
    concepts = [Concept(BACKGROUND, BACKGROUND_PHRASES, frozenset({0}))]
    for kind, spec in KINDS.items():
        for part in spec.parts:
            phrases = tuple(p for p in part_phrases(kind, part) if p not in taken)
            concepts.append(Concept(f"{kind}/{part}", phrases, frozenset({part_label(kind, part)})))
    concepts += generic_concepts
    for kind, spec in KINDS.items():
        labels = frozenset(part_label(kind, part) for part in spec.parts)
        nouns = kind_nouns(kind)
        concepts.append(Concept(kind, tuple(t.format(kind=k) for t in OBJECT_TEMPLATES for k in nouns), labels))
        for color in COLORS:
            phrases = tuple(t.format(kind=k, color=color) for t in COLORED_OBJECT_TEMPLATES for k in nouns)
            concepts.append(Concept(f"{color} {kind}", phrases, labels, color))
    return tuple(concepts)
