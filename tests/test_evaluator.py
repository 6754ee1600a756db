"""The micro-world evaluator: augmentation, loading from assets/evaluator, predictions on fresh renders."""

import pytest
import torch

from sds3d.world import fronted_kinds
from sds3d.world.dataset import SEEDS, render_dataset
from sds3d.world.evaluator import EVALUATOR_DIR, Evaluator, EvaluatorNet, prepare, score
from sds3d.world.train_evaluator import DEFAULTS, augment, gaussian_blur, view_mask

HAS_ASSET = (EVALUATOR_DIR / "model.safetensors").exists()
needs_asset = pytest.mark.skipif(not HAS_ASSET, reason="assets/evaluator not trained yet "
                                 "(python -m sds3d.world.train_evaluator)")


@pytest.fixture(scope="module")
def fresh():
    return render_dataset(32, seed=SEEDS["tests"] + 10)


def test_augment_keeps_shape_range_and_white_fill():
    gen = torch.Generator().manual_seed(0)
    x = torch.ones(8, 3, 32, 32)
    x[:, :, 12:20, 12:20] = 0.2
    y = augment(x, gen, DEFAULTS)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    # Far from the object the background stays near white (only brightness, gain and noise change it).
    assert y[:, :, :3, :3].mean() > 0.8
    blurred = gaussian_blur(x, torch.full((8,), 1e-3))
    assert torch.allclose(blurred, x, atol=1e-5)


def test_view_mask():
    kinds = ["cube", fronted_kinds()[0], "cube"]
    from sds3d.world.dataset import labels

    all_kinds, _, views = labels()
    kind = torch.tensor([all_kinds.index(k) for k in kinds])
    view = torch.tensor([views.index("front"), views.index("side"), views.index("overhead")])
    fronted_idx = torch.tensor([all_kinds.index(k) for k in fronted_kinds()])
    assert view_mask(kind, view, fronted_idx, views.index("overhead")).tolist() == [False, True, True]


def test_net_shapes():
    net = EvaluatorNet(28, 10, 4).eval()
    out = net(torch.zeros(2, 3, 32, 32))
    assert out["kind"].shape == (2, 28) and out["color"].shape == (2, 10) and out["view"].shape == (2, 4)
    assert out["features"].shape == (2, 256)


def test_prepare_accepts_layouts():
    x = torch.rand(2, 64, 64, 3)
    y = prepare(x)
    assert y.shape == (2, 3, 32, 32) and y.min() >= -1 and y.max() <= 1
    assert prepare((x * 255).to(torch.uint8).permute(0, 3, 1, 2)).shape == (2, 3, 32, 32)


@needs_asset
def test_evaluator_on_fresh_renders(fresh):
    evaluator = Evaluator.load()
    assert evaluator.kinds == fresh.kinds and evaluator.colors == fresh.colors and evaluator.views == fresh.views
    images = fresh.float_images()
    pred = evaluator.predict(images)
    assert len(pred["kind"]) == len(fresh) and pred["kind_probs"].shape == (len(fresh), len(fresh.kinds))
    assert torch.allclose(pred["color_probs"].sum(-1), torch.ones(len(fresh)), atol=1e-5)
    kinds = [fresh.kinds[i] for i in fresh.kind.tolist()]
    colors = [fresh.colors[i] for i in fresh.color.tolist()]
    views = [fresh.views[i] for i in fresh.view.tolist()]
    result = score(evaluator, images, kinds, colors, views)
    assert result["kind_acc"] >= 0.85 and result["color_acc"] >= 0.9
    if result["n_view"] >= 4:
        assert result["view_acc"] >= 0.6
    features = evaluator.features(images[:4])
    assert features.shape == (4, 256)
    # Larger renders are area-averaged to 32x32 first.
    big = torch.nn.functional.interpolate(images[:4], scale_factor=2, mode="nearest")
    assert evaluator.predict(big)["kind"] == pred["kind"][:4]
