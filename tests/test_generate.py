"""The generation loop on a tiny budget: outputs, determinism, crash + resume equals uninterrupted."""

import json

import pytest
import torch
from test_guidance_contract import ANY_PRIOR
from toy_priors import GaussianToyPrior

from sds3d.config import apply_override, from_dict, load_json, to_dict
from sds3d.generate import GenerateConfig, generate
from sds3d.guidance.sds import SDSConfig
from sds3d.representations import GaussiansConfig
from sds3d.representations.gaussian_densification import DensificationConfig


def tiny_config(out, **changes) -> GenerateConfig:
    config = GenerateConfig(
        prompt="a red mug", steps=12, seed=3, views_per_step=2, resolution=16, out=str(out), preview_every=6,
        checkpoint_every=5, turntable_frames=4, turntable_resolution=16, sds=SDSConfig(guidance_scale=5.0),
        gaussians=GaussiansConfig(num_points=150, densify=DensificationConfig(
            refine_start_iter=2, refine_every=3, refine_stop_iter=11, grow_grad2d=1e-7)))
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def prior():
    return GaussianToyPrior({"": 0.0}, default_mean=0.6, resolution=16)  # renders are 16x16


def params(result):
    return {k: v.detach().clone() for k, v in result.representation.params.items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_run_directory_contents(tmp_path):
    result = generate(tiny_config(tmp_path), prior=prior(), progress=False)
    for name in ("config.json", "checkpoint.pt", "asset.ply", "turntable.gif", "preview.png", "metrics.json",
                 "previews/step_00006.png", "previews/step_00012.png"):
        assert (tmp_path / name).exists(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 12 and metrics["seconds"] > 0
    assert set(metrics["time_breakdown"]) == {"render", "prior", "backward", "optimizer"}
    assert metrics["gaussians"] == len(result.representation)  # counted after the last step's pruning
    assert metrics["hidden_gaussians_pruned"] >= 0
    # the resolved config re-loads as the same config
    assert load_json(GenerateConfig, tmp_path / "config.json") == tiny_config(tmp_path)
    assert len(result.representation) != 150  # densification ran


def test_same_seed_same_parameters(tmp_path):
    a = params(generate(tiny_config(tmp_path / "a"), prior=prior(), progress=False))
    b = params(generate(tiny_config(tmp_path / "b"), prior=prior(), progress=False))
    assert_same(a, b)
    c = params(generate(tiny_config(tmp_path / "c", seed=4), prior=prior(), progress=False))
    assert a["means"].shape != c["means"].shape or not torch.equal(a["means"], c["means"])


@pytest.mark.parametrize("guidance", ["sds", "cds"])  # CDS: fixed noise and Gaussians' colour neighbours
def test_crash_and_resume_equals_uninterrupted(tmp_path, guidance):
    reference = params(generate(tiny_config(tmp_path / "ref", guidance=guidance), prior=prior(), progress=False))

    def crash(step, logs, output):
        if step == 7:  # after the checkpoint at 5 steps
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tiny_config(tmp_path / "run", guidance=guidance), prior=prior(), progress=False, callback=crash)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 5
    resumed = params(generate(tiny_config(tmp_path / "run", guidance=guidance), prior=prior(), progress=False,
                              resume=True))
    assert_same(reference, resumed)


def test_stop_keeps_the_partial_result(tmp_path):
    calls = []
    result = generate(tiny_config(tmp_path), prior=prior(), progress=False,
                      should_stop=lambda: len(calls) >= 4, callback=lambda s, l, o: calls.append(s))
    assert result.metrics["steps"] == 4 and (tmp_path / "asset.ply").exists()
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 4


def test_config_overrides_and_errors(tmp_path):
    config = apply_override(tiny_config(tmp_path), "sds.guidance_scale=30")
    config = apply_override(config, "camera.elevation_range=[0, 30]")
    assert config.sds.guidance_scale == 30 and config.camera.elevation_range == (0, 30)
    with pytest.raises(ValueError, match="unknown config key"):
        apply_override(config, "sds.scale=3")
    with pytest.raises(ValueError, match="unknown representation"):
        generate(tiny_config(tmp_path, representation="voxels"), prior=prior(), progress=False)
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(tiny_config(tmp_path, prompt="   "), prior=prior(), progress=False)


def test_default_config_round_trips_through_json():
    config = GenerateConfig()
    assert from_dict(GenerateConfig, json.loads(json.dumps(to_dict(config)))) == config


@pytest.fixture(scope="module")
def tiny_sd_prior(tmp_path_factory):
    from tiny_pipelines import save_tiny_sd_pipeline

    from sds3d.guidance.priors.stable_diffusion import StableDiffusionPrior

    return StableDiffusionPrior.from_pretrained(save_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny_sd")))


@pytest.mark.parametrize("name", sorted(ANY_PRIOR))
def test_every_guidance_runs_in_the_loop(tmp_path, name, tiny_sd_prior):
    """Two steps of every variant; VSD needs a real UNet (LoRA), so it runs on a tiny SD pipeline."""
    config = tiny_config(tmp_path, guidance=name, steps=2, preview_every=0, checkpoint_every=0)
    result = generate(config, prior=tiny_sd_prior if name == "vsd" else prior(), progress=False)
    assert result.metrics["steps"] == 2 and torch.isfinite(torch.tensor(result.metrics["final_loss"]))
    moved = result.representation.params["sh0"].detach()
    assert torch.isfinite(moved).all()


@pytest.mark.parametrize("name, attribute", [("dsd", "z_T"), ("cds", "noise")])
def test_fixed_noise_follows_the_run_seed(tmp_path, name, attribute):
    from sds3d.generate import make_guidance

    def noise(seed, pinned=None):
        config = tiny_config(tmp_path, guidance=name, seed=seed)
        getattr(config, name).seed = pinned
        return getattr(make_guidance(config, prior()), attribute)

    assert torch.equal(noise(1), noise(1))
    assert not torch.allclose(noise(1), noise(2))
    assert torch.equal(noise(1, pinned=7), noise(2, pinned=7))


@pytest.mark.parametrize("name", ["csd", "cds", "sdi"])
@pytest.mark.parametrize("lr_scale", [1.0, 0.25])
def test_guidance_scales_the_representation_learning_rates(tmp_path, name, lr_scale):
    """CSD, CDS and SDI take a factor on the learning rates (`lr_scale`); the run's optimisers, as
    checkpointed, use them."""
    config = tiny_config(tmp_path, guidance=name, steps=2, preview_every=0, checkpoint_every=0)
    getattr(config, name).lr_scale = lr_scale
    generate(config, prior=prior(), progress=False)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["optimizers"]
    assert saved["means"]["param_groups"][0]["lr"] == pytest.approx(config.gaussians.lr_means * lr_scale)
    assert saved["sh0"]["param_groups"][0]["lr"] == pytest.approx(config.gaussians.lr_sh0 * lr_scale)


def test_alpha_regularizer_of_the_guidance_enters_the_loss(tmp_path):
    """A strong `alpha_sparsity` (DSD's floater regulariser) pushes every Gaussian's opacity down at every
    step: every logit drops by nearly Adam's bound (steps x lr); without it some rise."""
    def run(weight):
        config = tiny_config(tmp_path / str(weight), guidance="dsd", preview_every=0, checkpoint_every=0)
        config.gaussians.densify = DensificationConfig(enabled=False)
        config.dsd.alpha_sparsity = weight
        return config, generate(config, prior=prior(), progress=False).representation.opacities.detach()

    config, regularised = run(50.0)
    initial = torch.logit(torch.tensor(config.gaussians.init_opacity))
    adam_bound = config.steps * config.gaussians.lr_opacities  # the largest possible move of a logit
    assert (initial - torch.logit(regularised)).min() > 0.9 * adam_bound
    assert (torch.logit(run(0.0)[1]) - initial).max() > 0  # without it, some opacities rise


def test_color_smoothness_of_the_guidance_enters_the_loss(tmp_path):
    """CDS's `color_smoothness` weight pulls neighbouring Gaussians' colours together during a run."""
    def spread(weight):
        config = tiny_config(tmp_path / str(weight), guidance="cds", preview_every=0, checkpoint_every=0)
        config.gaussians.densify = DensificationConfig(enabled=False)
        config.cds.color_smoothness = weight
        config.cds.lr_scale, config.gaussians.lr_sh0 = 1.0, 0.1  # Adam moves colours by at most 12 x 0.1
        sh0 = generate(config, prior=prior(), progress=False).representation.params["sh0"].detach()
        return sh0.std(0).mean().item()

    smooth, free = spread(1000.0), spread(0.0)
    assert smooth < 0.5 * free, (smooth, free)


def test_a_run_is_the_same_whether_its_prior_is_loaded_or_passed_in(tmp_path):
    from sds3d.guidance.registry import load_prior

    loaded = params(generate(tiny_config(tmp_path / "loaded", prior="embedded-v2"), progress=False))
    passed = params(generate(tiny_config(tmp_path / "passed", prior="embedded-v2"), prior=load_prior("embedded-v2"),
                             progress=False))
    assert_same(loaded, passed)  # densification's splits draw from torch's global generator
