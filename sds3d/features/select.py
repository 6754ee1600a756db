"""Text queries on a distilled feature field: relevancy per point, a 3D mask, a highlighted render.

Relevancy (LERF): with phi the unit feature of a point, q the query's text embedding and n_j the
canonical negatives ("object", "things", "stuff", "texture"),

    relevancy = min_j  exp(10 phi.q) / (exp(10 phi.q) + exp(10 phi.n_j)),

computed on the field's decoded per-point features (no rendering). A point is selected when its
relevancy exceeds `threshold`, 0.5 by default: the query beats every canonical negative; the selection
then grows through nearest neighbours to points above `low_threshold` (`region_growing`). The shipped
part teacher scores a query against its own training vocabulary instead (`part_vocabulary`, see
`sds3d.features.vocabulary`: the softmax mass of what the query names); a teacher with calibrated
per-phrase probabilities only (`teacher.probabilities`) by those. The part teacher's negatives were
never trained against its phrases: on the micro-world's parts, relevancy selected at 0.15 mean IoU,
its sigmoid probabilities at 0.62 and its vocabulary at 0.73. A `context` (what the object is, e.g.
the prompt of the run that generated it) lets that vocabulary score a part within the object's kind
(`PartVocabulary.scores`). Points of
a NeRF are the occupied cells of its occupancy grid; of a mesh, its vertices; of Gaussians, the
Gaussians.

Reference: LERF: Language Embedded Radiance Fields, arXiv:2303.09553
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sds3d.cameras import Cameras, turntable_cameras
from sds3d.errors import InputError
from .field import feature_field_of
from .region_growing import grow_selection
from .teacher import CANONICAL_NEGATIVES

TEMPERATURE = 10.0  # LERF's softmax temperature on cosines
DEFAULT_THRESHOLD = 0.5
# Hysteresis (`region_growing`), part teacher of Gaussian renders, not grown -> grown: masked recolour
# on micro-world objects 0.908 -> 0.939, on generated assets 0.61 -> 0.80; selection IoU 0.855 -> 0.805
# and 0.61 -> 0.64.
DEFAULT_LOW_THRESHOLD = 0.2
HIGHLIGHT = (1.0, 0.55, 0.0)  # tint of selected points


def relevancy(features: torch.Tensor, query: torch.Tensor, negatives: torch.Tensor,
              temperature: float = TEMPERATURE) -> torch.Tensor:
    """features [N, D] (any length), query [D], negatives [K, D] (unit) -> relevancy [N] in (0, 1)."""
    phi = F.normalize(features.float(), dim=-1)
    positive = temperature * (phi @ query.float())  # [N]
    negative = temperature * (phi @ negatives.float().T)  # [N, K]
    return torch.sigmoid(positive[:, None] - negative).amin(-1)


def context_kind(context: str | None) -> str | None:
    """The micro-world kind a context text names ("a red mug" -> "mug"; "mug" -> "mug"), or None
    when it names none or several."""
    from sds3d.world.captions import find_mentions

    kinds = find_mentions(context)["kind"] if context else set()
    return next(iter(kinds)) if len(kinds) == 1 else None


def phrase_scores(teacher, features: torch.Tensor, phrases: list[str], context: str | None = None) -> torch.Tensor:
    """[P, N] score of each phrase at each point (features [N, D]): against the teacher's vocabulary
    when it has one (the part teacher; within the kind that `context` names, if any), else its
    calibrated probability when it has one, else LERF relevancy against the canonical negatives."""
    with torch.no_grad():
        if hasattr(teacher, "part_vocabulary"):
            return teacher.part_vocabulary.scores(F.normalize(features.float(), dim=-1), list(phrases),
                                                  kind=context_kind(context))
        if hasattr(teacher, "probabilities"):
            phi = F.normalize(features.float(), dim=-1)
            text = teacher.text_features(list(phrases)).float()
            return teacher.probabilities(phi.T[None, :, :, None], text)[0, :, :, 0]
        text = teacher.text_features([*phrases, *CANONICAL_NEGATIVES]).float()
        return torch.stack([relevancy(features, q, text[len(phrases):]) for q in text[:len(phrases)]])


def resolve_teacher(field, teacher=None):
    """`teacher` as given, else the one the field was distilled with (`load_feature_teacher`).
    InputError when its name or width differs from the field's, or its version (when it has one):
    another version's text features live in another space."""
    if teacher is None:
        try:
            from .load import load_feature_teacher
        except ImportError:
            raise InputError("no feature teacher is installed: pass one (library) or --teacher PATH") from None
        teacher = load_feature_teacher(field.teacher_path or None)
    if teacher.name != field.teacher_name or teacher.dim != field.dim:
        raise InputError(f"the feature field was distilled from {field.teacher_name} ({field.dim} channels), "
                         f"not {teacher.name} ({teacher.dim}); pass that teacher or distill again")
    version = getattr(teacher, "version", "")
    if version and field.teacher_version != version:
        was = f"version {field.teacher_version}" if field.teacher_version else "a version before versions were recorded"
        raise InputError(f"the feature field was distilled from {teacher.name} {was}, not version {version}: "
                         "run `sds3d distill-features` again")
    return teacher


def query_relevancy(representation, query: str, teacher=None, at: torch.Tensor | None = None,
                    context: str | None = None) -> torch.Tensor:
    """Score [N] of `query` at each point of the representation's field (see module docstring), or
    [M] at world points `at` [M, 3] for a field that is a function of position (a mesh's surface field).
    `context`: what the object is ("a red mug"), when known."""
    if not isinstance(query, str) or not query.strip():
        raise InputError("query: give a non-empty phrase, e.g. \"the handle\"")
    field = feature_field_of(representation)
    teacher = resolve_teacher(field, teacher)
    with torch.no_grad():
        features = field.point_features(representation) if at is None else field.decoder(field.latents_at(at.float()))
        return phrase_scores(teacher, features, [query.strip()], context)[0]


def candidate_phrases(teacher) -> list[str]:
    """Phrases to suggest when a query matches nothing: the teacher's own part phrases
    (`teacher.phrases` if it has them), else "the <part>" for every micro-world part name."""
    phrases = getattr(teacher, "phrases", None)
    if phrases:
        return list(phrases)
    from sds3d.world import KINDS

    return sorted({f"the {part}" for spec in KINDS.values() for part in spec.parts})


def best_phrases(representation, teacher=None, top: int = 3, context: str | None = None) -> list[tuple[str, float]]:
    """The `top` candidate phrases by the largest fraction of the asset's points they select
    (ties: by their highest relevancy) -> [(phrase, best relevancy)]."""
    field = feature_field_of(representation)
    teacher = resolve_teacher(field, teacher)
    phrases = candidate_phrases(teacher)
    with torch.no_grad():
        features = field.point_features(representation)[field.occupied(representation)]
        scores = phrase_scores(teacher, features, phrases, context)  # [P, N]
    fraction, peak = (scores > DEFAULT_THRESHOLD).float().mean(-1), scores.amax(-1)
    order = sorted(range(len(phrases)), key=lambda i: (-float(fraction[i]), -float(peak[i])))
    return [(phrases[i], float(peak[i])) for i in order[:top]]


def mask_of_scores(representation, scores: torch.Tensor, threshold: float = DEFAULT_THRESHOLD,
                   low_threshold: float = DEFAULT_LOW_THRESHOLD, at: torch.Tensor | None = None) -> torch.Tensor:
    """[N] bool from the scores [N] of `query_relevancy`: the occupied points above `threshold`, and
    those above `low_threshold` joined to them through nearest neighbours (`grow_selection`; no
    growth when `low_threshold >= threshold`); with `at` [M, 3], of those world points."""
    field = feature_field_of(representation)
    points = field.points(representation) if at is None else at
    eligible = field.occupied(representation) if at is None else None
    return grow_selection(points, scores, threshold, low_threshold, eligible=eligible)


def select_points(representation, query: str, teacher=None, threshold: float = DEFAULT_THRESHOLD,
                  at: torch.Tensor | None = None, context: str | None = None,
                  low_threshold: float = DEFAULT_LOW_THRESHOLD) -> torch.Tensor:
    """[N] bool: the points of `representation` (which must carry a distilled feature field,
    `attach_field` / `load_field`) whose relevancy to `query` exceeds `threshold` (0.5: the query
    beats every canonical negative), grown through their nearest neighbours to points above
    `low_threshold` (`mask_of_scores`); with `at` [M, 3], which of those world points are selected, for
    a field that is a function of position (e.g. Gaussians sampled on a mesh with a surface field).
    `teacher`: the field's own when None. `context`: what the object is, e.g. the prompt that
    generated it ("a red mug"), when known. InputError when the asset has no field, or when no point
    matches (naming the phrases that match best)."""
    for name, value in (("threshold", threshold), ("low_threshold", low_threshold)):
        if not 0.0 < value < 1.0:
            raise InputError(f"{name} must be in (0, 1), got {value}")
    field = feature_field_of(representation)
    teacher = resolve_teacher(field, teacher)
    scores = query_relevancy(representation, query, teacher, at, context)
    mask = mask_of_scores(representation, scores, threshold, low_threshold, at)
    if not mask.any():
        best = best_phrases(representation, teacher, context=context)
        suggestions = ", ".join(f"\"{phrase}\" ({score:.2f})" for phrase, score in best)
        raise InputError(f"no point matches \"{query}\" (best relevancy {float(scores.max()):.2f} < threshold "
                         f"{threshold}); the best-scoring part phrases here: {suggestions}")
    return mask


def highlight_colors(colors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """colours [N, 3] in [0, 1], mask [N] -> selected tinted towards HIGHLIGHT, others dimmed to grey."""
    tint = torch.tensor(HIGHLIGHT, dtype=colors.dtype)
    grey = colors.mean(-1, keepdim=True)
    return torch.where(mask[:, None], 0.35 * colors + 0.65 * tint, 0.25 * grey + 0.55)


@torch.no_grad()
def render_highlight(representation, mask: torch.Tensor, cameras: Cameras | None = None) -> np.ndarray:
    """uint8 [B, H, W, 3]: the asset with the points in `mask` tinted and the others dimmed (default:
    4 turntable views at 192 px). Gaussians and meshes recolour their points; a NeRF (whose points
    are grid cells) blends the tint by the nearest cell's mask at each visible surface point."""
    from sds3d.representations import Gaussians, Mesh

    from .operations import copy_asset

    cameras = cameras or turntable_cameras(4, elevation=20.0, width=192)
    if isinstance(representation, Gaussians):
        from sds3d.representations.spherical_harmonics import C0

        asset = copy_asset(representation)
        rgb = (asset.params["sh0"][:, 0] * C0 + 0.5).clamp(0, 1)
        asset.params["sh0"][:, 0] = (highlight_colors(rgb, mask) - 0.5) / C0
        asset.params["shN"].zero_()
        image = asset.render(cameras).rgb
    elif isinstance(representation, Mesh) and representation.vertex_colors is not None:
        asset = copy_asset(representation)
        asset.vertex_colors.copy_(highlight_colors(asset.vertex_colors.clamp(0, 1), mask))
        image = asset.render(cameras).rgb
    else:
        image = _blended_highlight(representation, mask, cameras)
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def _blended_highlight(representation, mask: torch.Tensor, cameras: Cameras) -> torch.Tensor:
    """Any representation: its render, tinted where the nearest field point (to the expected depth
    point of each pixel) is selected, dimmed elsewhere."""
    from scipy.spatial import cKDTree

    field = feature_field_of(representation)
    out = representation.render(cameras)
    occupied = field.occupied(representation)
    points, mask = field.points(representation)[occupied], mask[occupied]
    origins = cameras.centers[:, None, None]
    from sds3d.representations.volume_rendering import camera_rays

    _, directions, z_per_t = camera_rays(cameras)
    surface = origins + directions * (out.depth / z_per_t[..., None].clamp_min(1e-6))
    _, nearest = cKDTree(points.numpy()).query(surface.reshape(-1, 3).numpy())
    selected = mask[torch.as_tensor(nearest)].reshape(out.depth.shape).float() * (out.alpha > 0.5)
    tint = torch.tensor(HIGHLIGHT)
    dimmed = 0.25 * out.rgb.mean(-1, keepdim=True) + 0.75
    lit = 0.35 * out.rgb + 0.65 * tint
    return selected * lit + (1 - selected) * torch.where(out.alpha > 0.5, dimmed, out.rgb)


__all__ = ["DEFAULT_LOW_THRESHOLD", "DEFAULT_THRESHOLD", "TEMPERATURE", "best_phrases", "candidate_phrases",
           "context_kind", "highlight_colors", "mask_of_scores", "query_relevancy", "relevancy", "render_highlight",
           "select_points"]
