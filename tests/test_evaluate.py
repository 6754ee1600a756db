import numpy as np
import pytest
import torch
import trimesh

from sds3d.evaluate import (backproject_depth, chamfer_distance, evaluation_cameras, janus_rate,
                            render_for_evaluator)
from sds3d.representations import Gaussians, GaussiansConfig
from sds3d.world import make_object


def surface_gaussians(mesh, n=8000):
    gaussians = Gaussians.from_mesh(mesh, n, GaussiansConfig(init_opacity=0.95))
    with torch.no_grad():
        gaussians.params["scales"].clamp_(max=np.log(0.025))
    return gaussians


def test_chamfer_is_analytic_on_shifted_sets():
    a = np.random.default_rng(0).uniform(size=(500, 3))
    assert chamfer_distance(a, a) == 0
    assert chamfer_distance(a, a + [0.001, 0, 0]) == pytest.approx(0.001, rel=1e-6)
    assert chamfer_distance(a, np.zeros((0, 3))) == float("inf")


def test_depth_backprojection_recovers_the_surface_and_ranks_shapes():
    mug = make_object("mug", "red").mesh
    truth = np.asarray(trimesh.sample.sample_surface(mug, 10000, seed=1)[0])
    cameras = evaluation_cameras(resolution=48)
    _, right = render_for_evaluator(surface_gaussians(mug), cameras)
    _, wrong = render_for_evaluator(surface_gaussians(make_object("cone", "red").mesh), cameras)
    right_points = backproject_depth(right, cameras)
    assert np.abs(right_points).max() < 0.6  # inside the object's box (extent 1, centred)
    d_right, d_wrong = (chamfer_distance(backproject_depth(o, cameras), truth) for o in (right, wrong))
    assert d_right < 0.05 and d_wrong > 2 * d_right


def test_janus_rate_counts_faces_seen_from_behind():
    cameras = evaluation_cameras(resolution=16)  # azimuths 0, 45, ..., 315 at two elevations
    honest = ["front" if abs(((a + 180) % 360) - 180) <= 45 else "back" for a in cameras.azimuth.tolist()]
    assert janus_rate(cameras, honest) == 0.0
    assert janus_rate(cameras, ["front"] * len(cameras)) == 1.0


def test_evaluate_asset_without_geometry_gives_the_evaluators_scores_only(monkeypatch):
    """`geometry=False` (what an edit's metrics keep) skips the Chamfer distance and the shape ranking."""
    import sds3d.evaluate as evaluate

    def no_shape(*args):
        raise AssertionError("the shape score ran")

    monkeypatch.setattr(evaluate, "shape_points", no_shape)
    mug = surface_gaussians(make_object("mug", "red").mesh, n=2000)
    scores = evaluate.evaluate_asset(mug, "a red mug", geometry=False)
    assert set(scores) == {"kind", "color", "kind_acc", "color_acc", "janus_rate"}
    assert scores["kind"] == "mug" and scores["color_acc"] > 0.5
