"""What every registered guidance variant must do, checked on each entry of `GUIDANCE` that runs on any
prior (`ANY_PRIOR`; the library variants have their own tests) (with
test_generate's `test_every_guidance_runs_in_the_loop` and test_camera_prior's camera check): its
config is the section of GenerateConfig of its name, one call gives a finite scalar loss whose
gradient reaches the render, and a variant restored from another's `state_dict` (a resumed run)
takes exactly the step the other takes. VSD trains a LoRA on a real UNet, so it runs on a tiny
Stable Diffusion pipeline; the others on an analytic toy prior."""

import copy

import pytest
import torch
from toy_priors import GaussianToyPrior

from sds3d.cameras import CameraSampler
from sds3d.generate import GenerateConfig
from sds3d.guidance.registry import GUIDANCE, LIBRARY_GUIDANCE, build_guidance, guidance_configs
from sds3d.prompts import PromptConfig, PromptProcessor
from sds3d.representations import Gaussians, GaussiansConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_sd_prior(tmp_path_factory):
    from tiny_pipelines import save_tiny_sd_pipeline

    from sds3d.guidance.priors.stable_diffusion import StableDiffusionPrior

    return StableDiffusionPrior.from_pretrained(save_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny_sd")))


# the variants that run on any prior; those of LIBRARY_GUIDANCE score with a prior adapted on retrieved
# assets and have their own tests (tests/test_guidance_redream.py)
ANY_PRIOR = [name for name in GUIDANCE if name not in LIBRARY_GUIDANCE]


def made(name, prior, config):
    return build_guidance(name, prior, config, total_steps=10)


def prior_for(name, tiny_sd_prior):
    return tiny_sd_prior if name == "vsd" else GaussianToyPrior({"": 0.0}, default_mean=0.6, resolution=16)


def release(*guidances):
    """Takes LoRA adapters (VSD) off the shared UNet."""
    for guidance in guidances:
        if hasattr(guidance, "remove"):
            guidance.remove()


def step(guidance, prior, seed: int):
    """One call on two fixed views of fixed Gaussians -> (loss, its gradient on the rendered rgb)."""
    cameras = CameraSampler(width=16, height=16).sample(2, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    gaussians = Gaussians.random_in_sphere(GaussiansConfig(num_points=300, init_opacity=0.5),
                                           torch.Generator().manual_seed(0))
    render = gaussians.render(cameras)
    render.rgb.retain_grad()
    batch = PromptProcessor(prior, PromptConfig("a red mug"))(cameras)
    output = guidance(render, batch, cameras, step=5, generator=torch.Generator().manual_seed(seed))
    output.loss.backward()
    return output.loss.detach(), render.rgb.grad


def test_every_variant_has_its_config_section():
    sections = guidance_configs()
    assert list(sections) == list(GUIDANCE)
    for name, config in sections.items():
        assert type(getattr(GenerateConfig(), name)) is config


@pytest.mark.parametrize("name", ANY_PRIOR)
def test_a_step_has_a_finite_loss_whose_gradient_reaches_the_render(name, tiny_sd_prior):
    prior = prior_for(name, tiny_sd_prior)
    guidance = made(name, prior, getattr(GenerateConfig(), name))
    loss, grad = step(guidance, prior, seed=2)
    release(guidance)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", ANY_PRIOR)
def test_a_variant_restored_from_a_state_dict_takes_the_same_step(name, tiny_sd_prior):
    prior = prior_for(name, tiny_sd_prior)
    config = getattr(GenerateConfig(), name)
    trained = made(name, prior, config)
    step(trained, prior, seed=2)  # state moves (LoRA, fixed noise, ...)
    state = copy.deepcopy(trained.state_dict())
    expected = step(trained, prior, seed=3)
    release(trained)
    restored = made(name, prior, config)
    restored.load_state_dict(state)
    got = step(restored, prior, seed=3)
    release(restored)
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
