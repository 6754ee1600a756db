"""Numbers for "does the asset look like the prompt from every side", on the micro-world.

- kind / colour accuracy: the evaluator's predictions on renders from 8 azimuths x 2 elevations;
- Janus rate (fronted kinds): the fraction of clearly non-front views (side or back, at least
  22.5 degrees away from a bin boundary) that the evaluator sees as a front view — a face where
  there should be none;
- Chamfer distance: surface points back-projected from rendered depth (alpha > 0.5) against points
  sampled on the ground-truth mesh, mean of both nearest-neighbour directions, in object units
  (the object's largest extent is 1);
- shape accuracy, rank and margin (`sds3d.shape_accuracy`): whether the asset's 3D shape (a visual
  hull, normalised, any yaw) is nearer the prompted kind's than any other kind's — a check that
  the evaluator's 2D predictions cannot pass on colour and outline alone.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .cameras import Cameras, orbit_cameras
from .shape_accuracy import shape_points, shape_scores
from .views import view_bins

EVAL_AZIMUTHS = tuple(range(0, 360, 45))
EVAL_ELEVATIONS = (10.0, 30.0)


def evaluation_cameras(resolution: int = 64, radius: float = 2.5, fovy: float = 40.0) -> Cameras:
    azimuth = torch.tensor([a for _ in EVAL_ELEVATIONS for a in EVAL_AZIMUTHS], dtype=torch.float32)
    elevation = torch.tensor([e for e in EVAL_ELEVATIONS for _ in EVAL_AZIMUTHS], dtype=torch.float32)
    return orbit_cameras(elevation, (azimuth + 180) % 360 - 180, radius, fovy, resolution)


@torch.no_grad()
def render_for_evaluator(representation, cameras: Cameras, size: int = 32):
    """Renders at the cameras' size and area-downsamples to `size` (as the evaluator's training
    data). -> (images [B, 3, size, size] in [0, 1], render output at full size)."""
    output = representation.render(cameras)
    images = output.rgb.permute(0, 3, 1, 2).clamp(0, 1)
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="area")
    return images, output


def backproject_depth(output, cameras: Cameras, min_alpha: float = 0.5) -> np.ndarray:
    """World points [P, 3] of pixels with alpha > min_alpha, from expected depth."""
    points = []
    for b in range(len(cameras)):
        alpha, depth = output.alpha[b, ..., 0], output.depth[b, ..., 0]
        ys, xs = torch.nonzero(alpha > min_alpha, as_tuple=True)
        if len(ys) == 0:
            continue
        K, c2w = cameras.Ks[b], torch.linalg.inv(cameras.viewmats[b])
        z = depth[ys, xs]
        cam = torch.stack([(xs + 0.5 - K[0, 2]) / K[0, 0] * z, (ys + 0.5 - K[1, 2]) / K[1, 1] * z, z], dim=-1)
        points.append((cam @ c2w[:3, :3].T + c2w[:3, 3]).cpu().numpy())
    return np.concatenate(points) if points else np.zeros((0, 3))


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric mean nearest-neighbour distance between point sets [P, 3] and [Q, 3]."""
    from scipy.spatial import cKDTree

    if len(a) == 0 or len(b) == 0:
        return float("inf")
    return float(0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean()))


def janus_rate(cameras: Cameras, predicted_views: list[str]) -> float | None:
    """Fraction of clearly side/back views predicted as "front" (None if there are none)."""
    azimuth = (cameras.azimuth + 180) % 360 - 180
    clear = [abs(abs(a) - 45.0) >= 22.5 and abs(abs(a) - 135.0) >= 22.5 for a in azimuth.tolist()]
    true_bins = view_bins(cameras.elevation, cameras.azimuth)
    judged = [p for p, t, c in zip(predicted_views, true_bins, clear) if c and t in ("side", "back")]
    return None if not judged else sum(p == "front" for p in judged) / len(judged)


def evaluate_asset(representation, prompt: str, evaluator=None, chamfer_points: int = 20000, seed: int = 0,
                   geometry: bool = True) -> dict:
    """Scores for a micro-world prompt (an empty dict when the prompt names no micro-world object);
    `geometry=False` leaves out the Chamfer distance and the shape scores (the evaluator's only)."""
    from .world import KINDS, make_object, parse_prompt

    parsed = parse_prompt(prompt)
    if parsed is None:
        return {}
    kind, color, _ = parsed
    cameras = evaluation_cameras()
    images, output = render_for_evaluator(representation, cameras)
    if evaluator is None:
        from .world.evaluator import Evaluator

        evaluator = Evaluator.load()
    predictions = evaluator.predict(images)
    scores = {"kind": kind, "color": color,
              "kind_acc": float(np.mean([k == kind for k in predictions["kind"]])),
              "color_acc": float(np.mean([c == color for c in predictions["color"]]))}
    scores["janus_rate"] = janus_rate(cameras, predictions["view"]) if KINDS[kind].has_front else None
    if not geometry:
        return scores
    import trimesh

    truth = trimesh.sample.sample_surface(make_object(kind, color).mesh, chamfer_points, seed=seed)[0]
    scores["chamfer"] = chamfer_distance(backproject_depth(output, cameras), np.asarray(truth))
    scores.update(shape_scores(shape_points(representation), kind))
    return scores
