"""StableDiffusionPrior on tiny random SD-shaped pipelines saved in the diffusers layout (no network).

The pipelines are written with `save_pretrained` and loaded back through
`StableDiffusionPrior.from_pretrained(folder)`, the same code path as a real checkpoint.
"""

import pytest
import torch
import torch.nn.functional as F
from tiny_pipelines import TINY_HIDDEN, TINY_MAX_LENGTH, build_tiny_sd_pipeline, save_tiny_sd_pipeline

from sds3d.guidance.priors.prior import TextEmbedding, cfg_combine, guided_noise
from sds3d.guidance.priors.prior import resolve_device
from sds3d.guidance.priors.stable_diffusion import StableDiffusionPrior, model_output_to_eps, resolve_dtype


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny workloads: one thread is fastest


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return save_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny_sd"), prediction_type="epsilon", seed=0)


@pytest.fixture(scope="module")
def prior(sd_folder):
    return StableDiffusionPrior.from_pretrained(sd_folder, device="cpu")


@pytest.fixture(scope="module")
def v_prior(tmp_path_factory):
    folder = save_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny_sd_v"), prediction_type="v_prediction", seed=1)
    return StableDiffusionPrior.from_pretrained(folder, device="cpu")


def direct_unet(prior, x_t, t, hidden):
    with torch.no_grad():
        return prior.unet(x_t, t, encoder_hidden_states=hidden).sample


# -- loading --------------------------------------------------------------------------------------

def test_loads_frozen_fp32_on_cpu_with_config_resolution(prior):
    assert prior.device == torch.device("cpu") and prior.dtype == torch.float32
    assert prior.resolution == 8 * 2  # unet sample_size 8 x VAE scale factor 2 (two VAE levels)
    assert prior.prediction_type == "epsilon"
    for module in (prior.unet, prior.vae, prior.text_encoder):
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
        assert all(p.dtype == torch.float32 for p in module.parameters())


def test_alphas_cumprod_match_the_scheduler(prior, sd_folder):
    from diffusers import DDPMScheduler

    reference = DDPMScheduler.from_pretrained(sd_folder, subfolder="scheduler").alphas_cumprod
    assert prior.alphas_cumprod.dtype == torch.float32
    assert prior.num_train_timesteps == 1000
    torch.testing.assert_close(prior.alphas_cumprod, reference.float(), rtol=0, atol=0)
    alpha, sigma = prior.alpha_sigma(torch.tensor([0, 999]))
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(alpha))


def test_missing_local_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"prior path .*nope does not exist"):
        StableDiffusionPrior.from_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"prior path .* does not exist"):
        StableDiffusionPrior.from_pretrained(str(tmp_path / "nope" / "deeper"))


def test_folder_without_sd_layout_is_rejected(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(FileNotFoundError, match=r"missing vae/, text_encoder/, tokenizer/, scheduler/"):
        StableDiffusionPrior.from_pretrained(tmp_path)


def test_uncached_hub_id_gives_one_line_error():
    with pytest.raises(OSError) as info:
        StableDiffusionPrior.from_pretrained("sds3d-tests/no-such-model", local_files_only=True)
    message = str(info.value)
    assert "\n" not in message
    assert "sds3d-tests/no-such-model" in message
    assert "cannot be downloaded here" in message and "local folder" in message


def test_from_pipeline_equals_loaded_folder(prior, tmp_path):
    pipe = build_tiny_sd_pipeline(tmp_path / "tok", prediction_type="epsilon", seed=0)  # same seed as sd_folder
    wrapped = StableDiffusionPrior.from_pipeline(pipe)
    assert wrapped.resolution == prior.resolution and wrapped.device == torch.device("cpu")
    assert all(not p.requires_grad for p in pipe.unet.parameters())
    text = wrapped.encode_prompts(["a red cube"])
    torch.testing.assert_close(text.hidden, prior.encode_prompts(["a red cube"]).hidden)
    x_t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([3, 700])
    torch.testing.assert_close(wrapped.predict_noise(x_t, t, text), prior.predict_noise(x_t, t, text))


def test_half_precision_path_returns_float32_and_gradients(sd_folder):
    """The dtype handling used on CUDA (fp16 modules), exercised on the CPU."""
    half = StableDiffusionPrior.from_pretrained(sd_folder, device="cpu", dtype=torch.float16)
    assert {half.unet.dtype, half.vae.dtype, half.text_encoder.dtype} == {torch.float16}
    rgb = torch.rand(1, 3, 16, 16, requires_grad=True)
    y = half.encode_images(rgb)
    y.sum().backward()
    assert y.dtype == torch.float32 and rgb.grad.dtype == torch.float32 and torch.isfinite(rgb.grad).all()
    text = half.encode_prompts(["a red cube"])
    assert text.hidden.dtype == torch.float32
    eps = half.predict_noise(y.detach(), torch.tensor([10]), text)
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()


def test_a_file_is_not_a_pipeline_folder(tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="from_single_file"):
        StableDiffusionPrior.from_pretrained(checkpoint)


def test_device_and_dtype_resolution():
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.float16
    assert resolve_dtype("fp16", torch.device("cpu")) == torch.float16
    assert resolve_device("auto").type == resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device(torch.device("cuda"))


# -- images ---------------------------------------------------------------------------------------

def test_encode_images_shape_matches_manual_vae_mean_and_is_deterministic(prior):
    rgb = torch.rand(2, 3, 20, 12, generator=torch.Generator().manual_seed(1))
    y = prior.encode_images(rgb)
    assert y.shape == (2, 4, 8, 8) and y.dtype == torch.float32
    torch.testing.assert_close(prior.encode_images(rgb), y, rtol=0, atol=0)  # posterior mean, no sampling
    with torch.no_grad():
        x = F.interpolate(rgb, size=(16, 16), mode="bilinear", align_corners=False, antialias=False)
        manual = prior.vae.encode(2 * x - 1).latent_dist.mean * prior.vae.config.scaling_factor
    torch.testing.assert_close(y, manual)


def test_encode_images_is_differentiable(prior):
    rgb = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    y = prior.encode_images(rgb)
    assert y.requires_grad
    (y * torch.randn_like(y)).sum().backward()
    assert rgb.grad is not None and rgb.grad.shape == rgb.shape
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    assert all(p.grad is None for p in prior.vae.parameters())  # frozen: nothing accumulates in the VAE


def test_decode_latents_returns_unit_range_rgb(prior):
    y = prior.encode_images(torch.rand(1, 3, 16, 16))
    with torch.no_grad():
        rgb = prior.decode_latents(y)
    assert rgb.shape == (1, 3, 16, 16) and rgb.dtype == torch.float32
    assert rgb.min() >= 0 and rgb.max() <= 1


# -- prompts --------------------------------------------------------------------------------------

class CountingTokenizer:
    def __init__(self, tokenizer):
        self.tokenizer, self.calls, self.texts = tokenizer, 0, []

    def __call__(self, texts, **kwargs):
        self.calls += 1
        self.texts.append(list(texts))
        return self.tokenizer(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_encode_prompts_shapes_and_cache(sd_folder):
    prior = StableDiffusionPrior.from_pretrained(sd_folder, device="cpu")  # a fresh cache
    prior.tokenizer = CountingTokenizer(prior.tokenizer)
    forwards = []
    handle = prior.text_encoder.register_forward_hook(lambda *args: forwards.append(1))
    try:
        first = prior.encode_prompts(["a red cube", "", "a red cube"])
        assert isinstance(first, TextEmbedding) and first.mask is None
        assert first.hidden.shape == (3, TINY_MAX_LENGTH, TINY_HIDDEN) and first.hidden.dtype == torch.float32
        assert prior.tokenizer.calls == 1 and len(forwards) == 1
        assert prior.tokenizer.texts == [["a red cube", ""]]  # deduplicated
        torch.testing.assert_close(first.hidden[0], first.hidden[2], rtol=0, atol=0)
        assert not torch.allclose(first.hidden[0], first.hidden[1])

        again = prior.encode_prompts(["", "a red cube"])
        assert prior.tokenizer.calls == 1 and len(forwards) == 1  # served from the cache
        torch.testing.assert_close(again.hidden[1], first.hidden[0], rtol=0, atol=0)
        assert prior.encode_prompts("a red cube").hidden.shape == (1, TINY_MAX_LENGTH, TINY_HIDDEN)

        prior.encode_prompts(["a blue sphere", "a red cube"])
        assert prior.tokenizer.calls == 2 and prior.tokenizer.texts[-1] == ["a blue sphere"]
    finally:
        handle.remove()


def test_prompt_embedding_equals_direct_clip_call(prior):
    text = prior.encode_prompts(["a red cube"])
    tokens = prior.tokenizer(["a red cube"], padding="max_length", max_length=TINY_MAX_LENGTH, truncation=True,
                             return_tensors="pt")
    assert tokens["input_ids"].shape == (1, TINY_MAX_LENGTH)
    with torch.no_grad():
        hidden = prior.text_encoder(tokens["input_ids"]).last_hidden_state
    torch.testing.assert_close(text.hidden, hidden)


# -- noise prediction -----------------------------------------------------------------------------

def test_predict_noise_shape_no_grad_and_equals_unet(prior):
    g = torch.Generator().manual_seed(3)
    x_t = torch.randn(3, 4, 8, 8, generator=g).requires_grad_(True)
    t = torch.tensor([1, 400, 999])
    text = prior.encode_prompts(["a red cube", "", "a red cube"])
    eps = prior.predict_noise(x_t, t, text)
    assert eps.shape == (3, 4, 8, 8) and eps.dtype == torch.float32 and not eps.requires_grad
    torch.testing.assert_close(eps, direct_unet(prior, x_t.detach(), t, text.hidden))
    # one embedding and a scalar t broadcast over the batch
    single = prior.predict_noise(x_t, torch.tensor(400), prior.encode_prompts([""]))
    torch.testing.assert_close(single[1], eps[1], atol=1e-5, rtol=1e-4)


def test_guided_noise_equals_manual_cfg(prior):
    g = torch.Generator().manual_seed(4)
    x_t = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([250, 800])
    cond, uncond = prior.encode_prompts(["a red cube"] * 2), prior.encode_prompts([""] * 2)
    guided, eps_c, eps_u = guided_noise(prior, x_t, t, cond, uncond, scale=7.5)
    manual_c, manual_u = prior.predict_noise(x_t, t, cond), prior.predict_noise(x_t, t, uncond)
    torch.testing.assert_close(eps_c, manual_c, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(eps_u, manual_u, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(guided, manual_u + 7.5 * (manual_c - manual_u), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(guided, cfg_combine(eps_c, eps_u, 7.5), rtol=0, atol=0)


def test_v_prediction_is_converted_exactly(v_prior):
    assert v_prior.prediction_type == "v_prediction"
    g = torch.Generator().manual_seed(5)
    x_t = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([30, 900])
    text = v_prior.encode_prompts(["a red cube", ""])
    v = direct_unet(v_prior, x_t, t, text.hidden)
    abar = v_prior.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    expected = abar.sqrt() * v + (1 - abar).sqrt() * x_t
    torch.testing.assert_close(v_prior.predict_noise(x_t, t, text), expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(expected, v, atol=1e-3)  # the conversion is not a no-op


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_model_output_conversion_recovers_eps_on_synthetic_data(prediction_type):
    g = torch.Generator().manual_seed(6)
    abar = torch.linspace(0.999, 0.01, 5, dtype=torch.float64).reshape(-1, 1, 1, 1)
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    y = torch.randn(5, 4, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 4, 8, 8, generator=g, dtype=torch.float64)
    x_t = alpha * y + sigma * eps
    output = {"epsilon": eps, "v_prediction": alpha * eps - sigma * y, "sample": y}[prediction_type]
    torch.testing.assert_close(model_output_to_eps(output, x_t, alpha, sigma, prediction_type), eps,
                               atol=1e-12, rtol=1e-10)
    with pytest.raises(ValueError, match="unsupported prediction_type"):
        model_output_to_eps(output, x_t, alpha, sigma, "flow")


# -- DeepFloyd IF stage I (pixel space, learned variance, T5) --------------------------------------

@pytest.fixture(scope="module")
def if_folder(tmp_path_factory):
    from tiny_pipelines import save_tiny_if_pipeline

    return save_tiny_if_pipeline(tmp_path_factory.mktemp("tiny_if"), seed=0)


@pytest.fixture(scope="module")
def if_prior(if_folder):
    from sds3d.guidance.priors.deepfloyd_if import DeepFloydIFPrior

    return DeepFloydIFPrior.from_pretrained(if_folder, device="cpu")


def test_if_loads_frozen_with_pixel_resolution_and_schedule(if_prior, if_folder):
    from diffusers import DDPMScheduler

    assert if_prior.resolution == 8 and if_prior.latent_channels == 3
    assert if_prior.unet.config.out_channels == 6  # eps + learned variance
    for module in (if_prior.unet, if_prior.text_encoder):
        assert not module.training and all(not p.requires_grad for p in module.parameters())
    reference = DDPMScheduler.from_pretrained(if_folder, subfolder="scheduler").alphas_cumprod
    torch.testing.assert_close(if_prior.alphas_cumprod, reference.float(), rtol=0, atol=0)


def test_if_missing_path_and_layout_errors(tmp_path):
    from sds3d.guidance.priors.deepfloyd_if import DeepFloydIFPrior

    with pytest.raises(FileNotFoundError, match=r"prior path .* does not exist"):
        DeepFloydIFPrior.from_pretrained(tmp_path / "nope")
    (tmp_path / "unet").mkdir()
    with pytest.raises(FileNotFoundError, match=r"missing text_encoder/, tokenizer/, scheduler/"):
        DeepFloydIFPrior.from_pretrained(tmp_path)


def test_if_images_are_pixels_in_minus_one_one(if_prior):
    rgb = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(7)).requires_grad_(True)
    y = if_prior.encode_images(rgb)
    torch.testing.assert_close(y, rgb * 2 - 1)
    y.sum().backward()
    torch.testing.assert_close(rgb.grad, torch.full_like(rgb, 2.0))
    torch.testing.assert_close(if_prior.decode_latents(y.detach()), rgb.detach())
    big = torch.rand(1, 3, 32, 24, requires_grad=True)
    out = if_prior.encode_images(big)
    assert out.shape == (1, 3, 8, 8)
    out.sum().backward()
    assert torch.isfinite(big.grad).all() and big.grad.abs().sum() > 0


def test_if_prompts_have_masks_are_cached_and_lowercased(if_prior):
    text = if_prior.encode_prompts(["a red cube", ""])
    assert text.hidden.shape == (2, TINY_MAX_LENGTH, TINY_HIDDEN) and text.mask.shape == (2, TINY_MAX_LENGTH)
    assert text.mask[0].sum() > text.mask[1].sum() >= 1  # "" is just </s>
    torch.testing.assert_close(if_prior.encode_prompts(["  A Red CUBE "]).hidden[0], text.hidden[0])
    cached = len(if_prior._prompts)
    if_prior.encode_prompts(["", "a red cube"])
    assert len(if_prior._prompts) == cached


def test_if_predict_noise_is_first_three_channels_and_cfg_works(if_prior):
    g = torch.Generator().manual_seed(8)
    x_t = torch.randn(2, 3, 8, 8, generator=g)
    t = torch.tensor([20, 640])
    cond, uncond = if_prior.encode_prompts(["a red cube"] * 2), if_prior.encode_prompts([""] * 2)
    eps = if_prior.predict_noise(x_t, t, cond)
    full = direct_unet(if_prior, x_t, t, cond.hidden)
    assert full.shape == (2, 6, 8, 8) and eps.shape == (2, 3, 8, 8)
    torch.testing.assert_close(eps, full[:, :3])
    guided, eps_c, eps_u = guided_noise(if_prior, x_t, t, cond, uncond, scale=20.0)
    torch.testing.assert_close(eps_c, eps, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(guided, cfg_combine(eps_c, eps_u, 20.0), rtol=0, atol=0)


# -- integration ----------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["sd", "if"])
def test_sds_step_through_the_prior_reaches_the_render(which, request):
    from sds3d.guidance.sds import SDS, SDSConfig
    from sds3d.prompts import PromptBatch
    from sds3d.types import RenderOutput

    prior = request.getfixturevalue("prior" if which == "sd" else "if_prior")
    sds = SDS(prior, SDSConfig(guidance_scale=7.5))
    rgb = torch.rand(2, 24, 24, 3, generator=torch.Generator().manual_seed(9)).requires_grad_(True)
    prompts = PromptBatch(cond=prior.encode_prompts(["a red cube"] * 2), uncond=prior.encode_prompts([""] * 2),
                          texts=["a red cube"] * 2, views=["front"] * 2)
    render = RenderOutput(rgb=rgb, alpha=torch.ones(2, 24, 24, 1), depth=torch.zeros(2, 24, 24, 1))
    out = sds(render, prompts, None, step=0, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
