"""Rendered micro-world training data: determinism, labels, captions, caching."""

import numpy as np
import pytest
import torch

from sds3d.views import VIEW_BINS, view_bins
from sds3d.world import COLORS, KINDS, fronted_kinds, parse_prompt
from sds3d.world.dataset import (OVERHEAD_PROB, SEEDS, WorldDataset, area_downsample, draw_captions, labels,
                                 load_or_render, render_dataset, render_views, sample_views, save_grid)


@pytest.fixture(scope="module")
def small():
    return render_dataset(24, seed=SEEDS["tests"])


def test_seeds_are_distinct():
    assert len(set(SEEDS.values())) == len(SEEDS)


def test_deterministic_for_a_seed(small):
    again = render_dataset(24, seed=SEEDS["tests"], chunk=7)  # chunking does not change the result
    assert torch.equal(small.images, again.images)
    for key in ("kind", "color", "view", "elevation", "azimuth"):
        assert torch.equal(getattr(small, key), getattr(again, key))
    other = render_dataset(4, seed=SEEDS["tests"] + 1)
    assert not torch.equal(small.images[:4], other.images)


def test_shapes_and_label_consistency(small):
    kinds, colors, views = labels()
    assert kinds == list(KINDS) and colors == list(COLORS) and views == list(VIEW_BINS)
    assert small.images.shape == (24, 3, 32, 32) and small.images.dtype == torch.uint8
    assert small.float_images().max() <= 1.0
    assert small.view.tolist() == [views.index(v) for v in view_bins(small.elevation, small.azimuth)]
    assert small.kind.max() < len(kinds) and small.color.max() < len(colors)
    # Distinct (kind, colour) pairs: fewer samples than pairs never repeat a pair.
    pairs = set(zip(small.kind.tolist(), small.color.tolist()))
    assert len(pairs) == 24
    sample = small.sample(0)
    assert sample["image"].shape == (3, 32, 32)
    assert sample["kind"] in KINDS and sample["color"] in COLORS and sample["view"] in VIEW_BINS


def test_balanced_pairs():
    # Every (kind, colour) pair floor(n / pairs) times, the remainder on distinct pairs.
    subset = render_dataset(10, seed=7, kinds=["cube", "sphere"], colors=["red", "blue"])
    counts = np.bincount(subset.kind.numpy() * len(COLORS) + subset.color.numpy())
    assert sorted(c for c in counts if c) == [2, 2, 3, 3]
    assert set(subset.kinds[k] for k in subset.kind.tolist()) == {"cube", "sphere"}


def test_white_background_and_visible_object(small):
    images = small.float_images()
    corners = images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners > 0.97).float().mean() > 0.9
    non_white = (images < 0.9).any(1).float().mean((1, 2))
    assert (non_white > 0.02).all()  # every object covers some pixels
    assert (non_white < 0.9).all()  # and does not fill the frame


def test_body_colour_dominates():
    elevation, azimuth = np.array([20.0, 20.0]), np.array([30.0, -150.0])
    for color, channel in (("red", 0), ("green", 1), ("blue", 2)):
        rgb = render_views("cube", color, elevation, azimuth, np.full(2, 2.5), np.full(2, 40.0))
        fg = (rgb < 0.9).any(1, keepdim=True).expand_as(rgb)
        mean = torch.stack([rgb[:, c][fg[:, c]].mean() for c in range(3)])
        assert mean.argmax() == channel, (color, mean)


def test_view_distribution():
    params = sample_views(20000, np.random.default_rng(0))
    bins = view_bins(torch.as_tensor(params["elevation"]), torch.as_tensor(params["azimuth"]))
    overhead = np.mean([b == "overhead" for b in bins])
    assert abs(overhead - OVERHEAD_PROB) < 0.02
    assert params["elevation"].min() >= -10 and params["elevation"].max() <= 80
    assert params["radius"].min() >= 2.2 and params["radius"].max() <= 2.8
    light = params["light"]
    assert np.allclose(np.linalg.norm(light, axis=1), 1) and (light[:, 1] >= 0).all() and (light[:, 2] > 0).all()


def test_captions_parse_back(small):
    rng = np.random.default_rng(0)
    captions = draw_captions(small.kind, small.color, small.view, rng, small.kinds, small.colors, small.views)
    with_view = 0
    for caption, k, c, v in zip(captions, small.kind.tolist(), small.color.tolist(), small.view.tolist()):
        kind, color, view = parse_prompt(caption)
        assert (kind, color) == (small.kinds[k], small.colors[c]), caption
        assert view in (None, small.views[v]), caption
        with_view += view is not None
    assert 3 < with_view < 21
    dropped = draw_captions(small.kind, small.color, small.view, rng, small.kinds, small.colors, small.views,
                            drop_prob=1.0)
    assert dropped == [""] * len(small)


def test_cache_roundtrip(tmp_path):
    first = load_or_render("unit", 6, 11, directory=tmp_path, progress=False)
    files = list(tmp_path.glob("unit-n6-s11-*.pt"))
    assert len(files) == 1
    second = load_or_render("unit", 6, 11, directory=tmp_path, progress=False)
    assert isinstance(second, WorldDataset) and torch.equal(first.images, second.images)
    assert second.kinds == first.kinds


def test_area_downsample_and_grid(tmp_path, small):
    x = torch.rand(2, 3, 64, 64)
    y = area_downsample(x)
    assert y.shape == (2, 3, 32, 32)
    assert torch.allclose(y[0, 0, 0, 0], x[0, 0, :2, :2].mean())
    save_grid(small.images[:8], tmp_path / "grid.png", captions=["a caption"] * 8, columns=4)
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_fronted_kinds_exist():
    assert set(fronted_kinds()) <= set(KINDS)
