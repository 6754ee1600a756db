"""VSD (ProlificDreamer, arXiv:2305.16213) on tiny random Stable-Diffusion pipelines."""

import io

import pytest
import torch
from tiny_pipelines import build_tiny_sd_pipeline
from toy_priors import GaussianToyPrior

from sds3d.cameras import orbit_cameras
from sds3d.guidance.lora import CameraEmbedding, camera_condition
from sds3d.guidance.sds import SDS, SDSConfig
from sds3d.guidance.priors.stable_diffusion import StableDiffusionPrior
from sds3d.guidance.vsd import VSD, VSDConfig, lora_target, view_independent_texts
from sds3d.prompts import PromptConfig, PromptProcessor
from sds3d.types import RenderOutput


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny workloads: one thread is fastest


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def prior(request, tmp_path_factory):
    pipe = build_tiny_sd_pipeline(tmp_path_factory.mktemp("tok"), prediction_type=request.param, seed=0)
    return StableDiffusionPrior.from_pipeline(pipe, device="cpu")


@pytest.fixture(scope="module")
def eps_prior(tmp_path_factory):
    pipe = build_tiny_sd_pipeline(tmp_path_factory.mktemp("tok_eps"), prediction_type="epsilon", seed=0)
    return StableDiffusionPrior.from_pipeline(pipe, device="cpu")


@pytest.fixture
def make_vsd():
    """Build VSD instances and take their adapters off the shared UNet afterwards."""
    made = []

    def make(prior, config=None, total_steps=1000):
        made.append(VSD(prior, config, total_steps))
        return made[-1]

    yield make
    for vsd in made:
        vsd.remove()


def cameras(n=2):
    return orbit_cameras(torch.tensor([10.0, 20.0, 0.0, 30.0][:n]), torch.tensor([0.0, 100.0, 180.0, -60.0][:n]),
                         2.5, 40.0, 16)


def render(n=2, seed=0, requires_grad=True):
    rgb = torch.rand(n, 16, 16, 3, generator=torch.Generator().manual_seed(seed))
    return RenderOutput(rgb=rgb.requires_grad_(requires_grad), alpha=torch.ones(n, 16, 16, 1),
                        depth=torch.full((n, 16, 16, 1), 2.5))


def lora_parameters(vsd):
    return vsd.lora.parameters()


# -- card test 1: identity set-up ---------------------------------------------------------------

@pytest.mark.parametrize("separate_unet", [False, True])
def test_fresh_lora_same_text_and_no_guidance_gives_exactly_zero(prior, make_vsd, separate_unet):
    vsd = make_vsd(prior, VSDConfig(guidance_scale=1.0, separate_unet=separate_unet))
    cams = cameras()
    prompts = PromptProcessor(prior, PromptConfig("a red cube", view_dependent=False))(cams)
    g = torch.Generator().manual_seed(1)
    y = torch.randn(2, 4, 8, 8, generator=g)
    t, noise = torch.tensor([30, 800]), torch.randn(2, 4, 8, 8, generator=g)
    text = prior.encode_prompts(["a red cube"] * 2)
    grad = vsd.gradient(y, t, noise, text, prior.encode_prompts([""] * 2), text, camera_condition(cams), 0)
    assert torch.equal(grad, torch.zeros_like(grad))
    out_render = render()
    out = vsd(out_render, prompts, cams, step=0, generator=torch.Generator().manual_seed(0))  # trains the LoRA after g
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.equal(out_render.rgb.grad, torch.zeros_like(out_render.rgb))


def test_prior_is_untouched_outside_the_estimator(eps_prior, make_vsd):
    x_t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    t, text = torch.tensor([10, 600]), eps_prior.encode_prompts(["a red cube"] * 2)
    before = eps_prior.predict_noise(x_t, t, text)
    vsd = make_vsd(eps_prior, VSDConfig(lora_lr=1e-2))
    cams = cameras()
    prompts = PromptProcessor(eps_prior, PromptConfig("a red cube"))(cams)
    for step in range(3):
        vsd(render(requires_grad=False), prompts, cams, step, torch.Generator().manual_seed(step))
    assert torch.equal(eps_prior.predict_noise(x_t, t, text), before)
    trained = vsd.estimator_noise(x_t, t, text, camera_condition(cams))
    assert not torch.allclose(trained, before, atol=1e-4)
    assert all(not p.requires_grad for name, p in eps_prior.unet.named_parameters() if "lora_" not in name)


# -- card test 2: eps_phi := eps is SDS ---------------------------------------------------------

def test_injected_noise_estimator_is_exactly_sds(prior, make_vsd):
    vsd = make_vsd(prior, VSDConfig(guidance_scale=7.5))
    sds = SDS(prior, SDSConfig(guidance_scale=7.5, weighting="sds"))
    g = torch.Generator().manual_seed(3)
    y = torch.randn(3, 4, 8, 8, generator=g)
    t, noise = torch.tensor([20, 500, 950]), torch.randn(3, 4, 8, 8, generator=g)
    cond, uncond = prior.encode_prompts(["a red cube, front view"] * 3), prior.encode_prompts([""] * 3)
    vsd.estimator_noise = lambda x_t, t_, text, camera: noise
    grad = vsd.gradient(y, t, noise, cond, uncond, prior.encode_prompts(["a red cube"] * 3),
                        camera_condition(cameras(3)), step=0)
    assert torch.equal(grad, sds.gradient(y, t, noise, cond, uncond, step=0))


# -- card test 3: v -> eps ------------------------------------------------------------------------

def test_v_target_converts_back_to_the_injected_noise_exactly(prior):
    g = torch.Generator().manual_seed(4)
    y, noise = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    t = torch.tensor([0, 250, 700, 999])
    alpha, sigma = prior.alpha_sigma(t)
    x_t = prior.add_noise(y, noise, t)
    target = lora_target(prior.prediction_type, y, noise, alpha, sigma)
    torch.testing.assert_close(prior.to_eps(target, x_t, t), noise, rtol=0, atol=2e-6)
    if prior.prediction_type == "v_prediction":
        torch.testing.assert_close(target, alpha * noise - sigma * y, rtol=0, atol=0)
    else:
        assert target is noise
    assert lora_target("sample", y, noise, alpha, sigma) is y
    with pytest.raises(ValueError, match="unsupported prediction_type"):
        lora_target("flow", y, noise, alpha, sigma)


# -- card test 4: the two losses stay apart ---------------------------------------------------------

def test_vsd_loss_reaches_only_the_render_and_lora_loss_only_the_estimator(prior, make_vsd):
    vsd = make_vsd(prior)
    cams = cameras()
    out_render = render()
    prompts = PromptProcessor(prior, PromptConfig("a red cube"))(cams)
    out = vsd(out_render, prompts, cams, step=0, generator=torch.Generator().manual_seed(5))
    out.loss.backward()
    assert out_render.rgb.grad is not None and out_render.rgb.grad.abs().sum() > 0
    assert all(p.grad is None for p in lora_parameters(vsd))
    assert {"t", "grad_norm", "loss_lora"} <= set(out.logs)

    y = prior.encode_images(out_render.rgb.detach().permute(0, 3, 1, 2)).requires_grad_(True)
    g = torch.Generator().manual_seed(6)
    loss = vsd.lora_loss(y, torch.tensor([100, 700]), torch.randn(y.shape, generator=g),
                         vsd.estimator_text(prompts), camera_condition(cams))
    loss.backward()
    assert y.grad is None
    grads = {name: p.grad for name, p in vsd.lora.unet.named_parameters() if vsd.lora.name in name}
    assert any(v is not None and v.abs().sum() > 0 for k, v in grads.items() if "lora_B" in k)
    assert vsd.lora.camera.net[2].weight.grad.abs().sum() > 0


# -- card test 5: L_phi decreases on a frozen particle ----------------------------------------------

def test_lora_loss_decreases_on_a_frozen_particle(eps_prior, make_vsd):
    vsd = make_vsd(eps_prior, VSDConfig(lora_lr=3e-2, camera_dropout=0.0))
    cams = cameras(1)
    y = eps_prior.encode_images(render(1, requires_grad=False).rgb.permute(0, 3, 1, 2)).detach()
    text, camera = eps_prior.encode_prompts(["a red cube"]), camera_condition(cams)
    g = torch.Generator().manual_seed(7)
    n = 64
    t_eval = torch.randint(0, 1000, (n,), generator=g)
    noise_eval = torch.randn(n, *y.shape[1:], generator=g)

    def evaluate():
        with torch.no_grad():
            return vsd.lora_loss(y.expand(n, -1, -1, -1), t_eval, noise_eval, text, camera.expand(n, -1)).item()

    before = evaluate()
    batch = 8
    losses = [vsd.lora_step(y.expand(batch, -1, -1, -1), text, camera.expand(batch, -1), g) for _ in range(40)]
    after = evaluate()
    # the random tiny UNet starts above the trivial loss 1 (predicting 0); the LoRA removes that excess
    assert after < 0.95 * before, (before, after)
    assert sum(losses[-10:]) < sum(losses[:10])


# -- card test 6: resuming ----------------------------------------------------------------------

def test_state_dict_round_trip_resumes_exactly(eps_prior, make_vsd):
    config = VSDConfig(lora_lr=1e-3)
    cams = cameras()
    prompts = PromptProcessor(eps_prior, PromptConfig("a red cube"))(cams)
    first = make_vsd(eps_prior, config)
    for step in range(2):
        first(render(seed=step, requires_grad=False), prompts, cams, step, torch.Generator().manual_seed(step))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = make_vsd(eps_prior, config)
    second.load_state_dict(torch.load(buffer, weights_only=True))

    outputs = []
    for vsd in (first, second):
        rgb = render(seed=9)
        out = vsd(rgb, prompts, cams, 2, torch.Generator().manual_seed(11))
        out.loss.backward()
        outputs.append((out.loss.detach(), out.logs, rgb.rgb.grad, [p.detach().clone() for p in vsd.lora.parameters()]))
    (loss_a, logs_a, grad_a, params_a), (loss_b, logs_b, grad_b, params_b) = outputs
    assert torch.equal(loss_a, loss_b) and logs_a == logs_b and torch.equal(grad_a, grad_b)
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))
    assert first.optimizer.state_dict()["state"][0]["step"] == 3


# -- the rest of the contract ---------------------------------------------------------------------

def test_view_suffix_is_stripped_for_the_estimator():
    texts = ["a red cube, front view", "a red cube, side view", "a red cube", "a mug, back view"]
    views = ["front", "side", "any", "front"]
    assert view_independent_texts(texts, views) == ["a red cube", "a red cube", "a red cube", "a mug, back view"]


def test_camera_embedding_starts_at_zero_and_camera_guidance_costs_one_more_evaluation(eps_prior, make_vsd):
    embedding = CameraEmbedding(128)
    assert torch.equal(embedding(torch.randn(3, 16)), torch.zeros(3, 128))
    assert make_vsd(eps_prior).unet_evals_per_step() == 4
    assert make_vsd(eps_prior, VSDConfig(camera_guidance_scale=2.0)).unet_evals_per_step() == 5
    vsd = make_vsd(eps_prior, VSDConfig(camera_guidance_scale=2.0))
    x_t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(12))
    t, text = torch.tensor([40, 400]), eps_prior.encode_prompts(["a red cube"] * 2)
    with torch.no_grad():  # give the camera MLP an effect
        vsd.lora.camera.net[2].weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(13))
    camera = camera_condition(cameras())
    with torch.no_grad():
        with vsd.lora.active(torch.zeros_like(camera)):
            free = eps_prior.to_eps(eps_prior.unet_output(x_t, t, text), x_t, t)
        with vsd.lora.active(camera):
            conditioned = eps_prior.to_eps(eps_prior.unet_output(x_t, t, text), x_t, t)
    assert not torch.allclose(free, conditioned, atol=1e-3)
    guided = vsd.estimator_noise(x_t, t, text, camera)
    torch.testing.assert_close(guided, free + 2 * (conditioned - free), atol=1e-5, rtol=1e-5)


def test_vsd_requires_a_diffusers_prior_and_cameras(eps_prior, make_vsd):
    with pytest.raises(TypeError, match="diffusers UNet prior"):
        VSD(GaussianToyPrior({"a": 0.5}))
    vsd = make_vsd(eps_prior)
    prompts = PromptProcessor(eps_prior, PromptConfig("a red cube"))(cameras())
    with pytest.raises(ValueError, match="Cameras"):
        vsd(render(), prompts, None, 0)


def test_the_estimator_split_over_threads_gives_each_slice_its_own_cameras(eps_prior, make_vsd):
    """On 2 threads the prior runs a no-grad batch as slices on worker threads (`batch_threads`); the
    LoRA's camera embedding, added by a hook inside the UNet, must take each slice's own rows: the
    split estimate equals the whole batch's (it crashed on mismatched sizes before)."""
    vsd = make_vsd(eps_prior)
    with torch.no_grad():
        vsd.lora.camera.net[2].weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(14))
    x_t = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(15))
    t, text = torch.tensor([40, 400, 800]), eps_prior.encode_prompts(["a red cube"] * 3)
    camera = camera_condition(cameras(3))
    threads, split = torch.get_num_threads(), eps_prior.batch_threads
    torch.set_num_threads(2)
    try:
        eps_prior.batch_threads = False
        whole = vsd.estimator_noise(x_t, t, text, camera)
        eps_prior.batch_threads = True
        sliced = vsd.estimator_noise(x_t, t, text, camera)
    finally:
        torch.set_num_threads(threads)
        eps_prior.batch_threads = split
    torch.testing.assert_close(sliced, whole, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(whole[0], whole[1])
