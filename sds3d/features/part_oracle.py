"""A ground-truth part teacher for micro-world objects: the reference that distillation and selection
are tested and benchmarked against.

Where a learned teacher reads images, the oracle knows the object and the cameras: it rasterizes the
object's mesh (`make_object`, parts in `KindSpec.parts` order) and gives every pixel the embedding
of the part it sees, or of the background. Embeddings live in one space shared by all kinds: part
name p -> normalize(e_p + e_object), background -> e_background, so any two parts are at cosine 1/2
and every part at 1/sqrt(2) from the canonical negatives ("object", "things", ...), which embed as
e_object. With LERF's relevancy (softmax of 10 x cosines) a point of the queried part then scores
0.95 and a point of another part 0.11, so the default threshold 0.5 separates them.

Phrases: "the <part>", "the <kind>'s <part>" (any synonym of the kind), "<part>", singular or plural
("the wheel", "the wheels"); a kind alone ("the mug") is the object; "background"; anything else
gets a direction of its own, orthogonal to every part.
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F

from sds3d.cameras import Cameras
from sds3d.features.teacher import CANONICAL_NEGATIVES
from sds3d.world import KINDS, make_object


def part_vocabulary() -> tuple[str, ...]:
    """Every part name of every kind, sorted."""
    return tuple(sorted({part for spec in KINDS.values() for part in spec.parts}))


def face_parts(kind: str) -> np.ndarray:
    """Part index (into `KINDS[kind].parts`, in order) of each face of `make_object(kind, ...)`."""
    spec = KINDS[kind]
    meshes = spec.builder()
    return np.repeat(np.arange(len(spec.parts)), [len(meshes[name].faces) for name in spec.parts])


def part_gaussians(kind: str, color: str = "red", count: int = 4000, seed: int = 0):
    """The object as Gaussians (`mesh_to_gaussians`) and each Gaussian's true part index [N]: the
    part of the face it was sampled on, its nearest face (at distance zero)."""
    from sds3d.representations.convert import mesh_to_gaussians
    from sds3d.representations.mesh import Mesh

    mesh = Mesh.from_trimesh(make_object(kind, color).mesh)  # face order kept
    points, _, _, face_ids, _ = mesh.sample_surface(count, torch.Generator().manual_seed(seed))
    gaussians = mesh_to_gaussians(mesh, count, generator=torch.Generator().manual_seed(seed))
    if not torch.equal(gaussians.means.detach(), points):
        raise RuntimeError("mesh_to_gaussians no longer samples as Mesh.sample_surface does")
    return gaussians, torch.from_numpy(face_parts(kind))[face_ids]


class PartOracle:
    """Ground-truth part features of one micro-world object; `name`, `dim` and `text_features` as
    a `FeatureTeacher`, with `part_features(cameras)` in place of `image_features(images)`."""

    name = "part-oracle"

    def __init__(self, kind: str, color: str = "red"):
        self.kind, self.spec = kind, KINDS[kind]
        self.object = make_object(kind, color)
        self.vocabulary = part_vocabulary()
        self.dim = len(self.vocabulary) + 3  # parts, then object, background, unknown
        self.face_part = torch.from_numpy(face_parts(kind))
        self.part_names = tuple(self.spec.parts)
        self.kind_words = tuple(sorted({w for s in KINDS.values() for w in s.synonyms} | {k.replace("_", " ") for k in KINDS},
                                       key=len, reverse=True))

    def _axis(self, index: int) -> torch.Tensor:
        return F.one_hot(torch.tensor(index), self.dim).float()

    def _part_embedding(self, part: str) -> torch.Tensor:
        object_axis = self._axis(len(self.vocabulary))
        return F.normalize(self._axis(self.vocabulary.index(part)) + object_axis, dim=0)

    def part_table(self) -> torch.Tensor:
        """[P + 1, D]: this object's parts in order, then the background."""
        rows = [self._part_embedding(p) for p in self.part_names]
        return torch.stack(rows + [self._axis(len(self.vocabulary) + 1)])

    @torch.no_grad()
    def part_ids(self, cameras: Cameras) -> torch.Tensor:
        """[B, H, W] part index per pixel (into `part_names`), -1 on the background."""
        from sds3d.cuda.mesh_rasterizer import visibility

        vertices = torch.as_tensor(self.object.mesh.vertices, dtype=torch.float32)
        faces = torch.as_tensor(self.object.mesh.faces, dtype=torch.int64)
        face_ids, _ = visibility(vertices, faces, cameras)
        return torch.where(face_ids >= 0, self.face_part[face_ids.clamp(min=0)], -1)

    def part_features(self, cameras: Cameras) -> torch.Tensor:
        """[B, D, H, W] unit-length features: each pixel's part embedding, or the background's."""
        ids = self.part_ids(cameras)
        table = self.part_table()
        return table[torch.where(ids >= 0, ids, len(self.part_names))].permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def visible(self, points: torch.Tensor, views: int = 48, resolution: int = 256,
                tolerance: float = 2e-3) -> torch.Tensor:
        """[N] bool: points on the object's visible surface, i.e. not deeper than `tolerance` behind
        the mesh's depth at their pixel in at least one of `views` cameras around the object
        (points sampled on faces inside another part's solid are never visible)."""
        from sds3d.cuda.mesh_rasterizer import visibility
        from sds3d.cuda._torch_mesh import project_points
        from .distill import distillation_cameras

        vertices = torch.as_tensor(self.object.mesh.vertices, dtype=torch.float32)
        faces = torch.as_tensor(self.object.mesh.faces, dtype=torch.int64)
        cameras = distillation_cameras(vertices, views, resolution)
        face_ids, depth = visibility(vertices, faces, cameras)
        u, v, z = project_points(points[None].float(), cameras.viewmats, cameras.Ks)  # [B, N]
        x, y = u.long().clamp(0, resolution - 1), v.long().clamp(0, resolution - 1)
        surface = depth[torch.arange(len(cameras))[:, None], y, x]
        seen = (face_ids[torch.arange(len(cameras))[:, None], y, x] >= 0) & (z <= surface + tolerance)
        return seen.any(0)

    def phrase_part(self, phrase: str) -> str | None:
        """The part name a phrase means (None for the object, a negative, or an unknown phrase)."""
        text = re.sub(r"\s+", " ", phrase.lower().strip())
        text = re.sub(r"^(the|a|an) ", "", text)
        for word in self.kind_words:  # "mug's handle", "coffee mug handle"
            text = re.sub(rf"^{re.escape(word)}('s)? ", "", text)
        for candidate in (text, text + "s", text[:-1] if text.endswith("s") else text):
            if candidate in self.vocabulary:
                return candidate
        return None

    def text_features(self, phrases: list[str]) -> torch.Tensor:
        """[N, D] unit-length embeddings (see the module docstring)."""
        rows = []
        for phrase in phrases:
            part = self.phrase_part(phrase)
            text = re.sub(r"^(the|a|an) ", "", phrase.lower().strip())
            if part is not None:
                rows.append(self._part_embedding(part))
            elif text in CANONICAL_NEGATIVES or text in self.kind_words:
                rows.append(self._axis(len(self.vocabulary)))
            elif text == "background":
                rows.append(self._axis(len(self.vocabulary) + 1))
            else:
                rows.append(self._axis(len(self.vocabulary) + 2))
        return torch.stack(rows)


__all__ = ["PartOracle", "face_parts", "part_gaussians", "part_vocabulary"]
