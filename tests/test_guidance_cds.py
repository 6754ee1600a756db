"""CDS (arXiv:2401.09050): no RNG inside the gradient, one eps* for every view and step,
t_n = t gives g = 0, the timestep schedule, state round trip, and the 1-D VE Gaussian sign test."""

import pytest
import torch
from toy_priors import GaussianToyPrior, prompt_batch

from sds3d.guidance.cds import CDS, CDSConfig
from sds3d.guidance.ddim import abar, ddim_step
from sds3d.guidance.perp_neg import guided_eps
from sds3d.types import RenderOutput


class RecordingPrior(GaussianToyPrior):
    inputs = []

    def predict_noise(self, x_t, t, text):
        self.inputs.append((x_t.clone(), t.clone()))
        return super().predict_noise(x_t, t, text)


def test_same_inputs_give_bit_identical_gradients_and_tn_equal_t_gives_zero():
    prior = GaussianToyPrior({"obj": 0.7, "": 0.0})
    cds = CDS(prior, CDSConfig(grad_clip=None))
    y = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    t, t_n = torch.tensor([400, 500, 900]), torch.tensor([200, 300, 700])
    p = prompt_batch(prior, 3)
    g1 = cds.gradient(y, t, t_n, p.cond, p.uncond, step=100)
    g2 = cds.gradient(y, t, t_n, p.cond, p.uncond, step=100)
    assert torch.equal(g1, g2) and g1.abs().max() > 1e-3
    assert torch.equal(cds.gradient(y, t, t, p.cond, p.uncond, step=100), torch.zeros_like(y))
    assert cds.unet_evals_per_step() == 4


def test_ode_step_is_the_shared_ddim_step_with_the_priors_clip():
    """The PF-ODE step x_t -> x_n equals `ddim_step`, including a clipping prior's x0 clip."""
    for clip in (None, 0.3):
        prior = RecordingPrior({"obj": 0.7, "": 0.0})
        prior.clip_sample_range = clip
        cds = CDS(prior, CDSConfig(grad_clip=None, guidance_scale=3.0))
        y = 2 * torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)) - 1
        t, t_n = torch.tensor([800, 500]), torch.tensor([600, 200])
        p = prompt_batch(prior, 2)
        RecordingPrior.inputs = []
        cds.gradient(y, t, t_n, p.cond, p.uncond, step=0)
        x_t, x_n = RecordingPrior.inputs[0][0][:2], RecordingPrior.inputs[1][0][:2]  # [cond; uncond] batches
        eps_t = guided_eps(prior, x_t, t, p.cond, p.uncond, 3.0)
        expected = ddim_step(x_t, eps_t, abar(prior, t, y), abar(prior, t_n, y), clip)
        torch.testing.assert_close(x_n, expected, rtol=1e-5, atol=1e-5)
        if clip is not None:
            assert (ddim_step(x_t, eps_t, abar(prior, t, y), abar(prior, t_n, y)) - expected).abs().max() > 1e-2


def test_eps_star_is_shared_by_views_and_steps():
    prior = RecordingPrior({"obj": 0.7, "": 0.0})
    cds = CDS(prior, CDSConfig(seed=3), total_steps=100)
    assert cds.noise.shape == (3, 4, 4)
    rgb = torch.rand(3, 4, 4, 3, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    for step in (0, 40, 99):
        prior.inputs = []
        out = cds(RenderOutput(rgb=rgb, alpha=None, depth=None), prompt_batch(prior, 3), None, step, gen)
        x_t, t = prior.inputs[0]  # first CFG call: [x_t; x_t] at t
        x_t, t = x_t[:3], t[:3]
        alpha, sigma = prior.alpha_sigma(t)
        implied = (x_t - alpha * rgb.permute(0, 3, 1, 2)) / sigma
        for view in range(3):
            torch.testing.assert_close(implied[view], cds.noise, rtol=1e-3, atol=1e-3)
        assert out.logs["t"] - out.logs["t_n"] >= 100


def test_timesteps_follow_the_sqrt_anneal_and_the_gap():
    prior = GaussianToyPrior({"obj": 0.7, "": 0.0})
    cds = CDS(prior, total_steps=3000)
    gen = torch.Generator().manual_seed(0)
    t, t_n = cds.timesteps(0, 4000, gen)
    assert (t_n == 700).all() and (t - t_n).min() == 100 and t.max() == 980  # t clamped to sigma_max
    t, t_n = cds.timesteps(750, 4000, gen)
    assert ((t_n - 400).abs() <= 1).all()  # 700 - 600 sqrt(750 / 3000) (truncated to an integer)
    assert (t - t_n).min() == 100 and (t - t_n).max() == 299
    t, t_n = cds.timesteps(3000, 4000, gen)
    assert (t_n == 100).all() and t.max() <= 980


def test_state_dict_round_trip_restores_eps_star():
    prior = GaussianToyPrior({"obj": 0.7, "": 0.0})
    a, b = CDS(prior, CDSConfig(seed=1)), CDS(prior, CDSConfig(seed=2))
    assert not torch.equal(a.noise, b.noise)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.noise, b.noise)
    y = torch.rand(2, 3, 4, 4)
    p = prompt_batch(prior, 2)
    t, t_n = torch.tensor([500, 500]), torch.tensor([300, 300])
    assert torch.equal(a.gradient(y, t, t_n, p.cond, p.uncond, 0), b.gradient(y, t, t_n, p.cond, p.uncond, 0))


class FlippedCDS(CDS):
    def gradient(self, *args, **kwargs):
        return -super().gradient(*args, **kwargs)


def descend(cds_class, prior, noise=None, steps=400, lr=1.0):
    cds = cds_class(prior, CDSConfig(guidance_scale=1.0, grad_clip=None, seed=0), total_steps=steps)
    if noise is not None:
        cds.load_state_dict({"noise": noise})
    rgb = torch.full((1, 1, 1, 3), 10.0, requires_grad=True)  # three independent 1-D problems
    opt = torch.optim.SGD([rgb], lr=lr)
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        out = cds(RenderOutput(rgb=rgb, alpha=None, depth=None), prompt_batch(prior, 1), None, step, gen)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if rgb.detach().abs().max() > 1e4:
            break
    return rgb.detach().flatten(), cds.noise.flatten()


def test_one_dimensional_sign_test():
    mu = 2.0
    prior = GaussianToyPrior({"obj": mu, "": mu}, s0=0.5, resolution=1)
    # with eps* = 0 the implemented sign converges to the data: y0 = 10 -> 2
    y, _ = descend(CDS, prior, noise=torch.zeros(3, 1, 1))
    assert y.tolist() == pytest.approx([mu] * 3, abs=0.05)
    # with the drawn eps* it converges next to the data: for this linear toy the Euler step's fixed
    # point is y = mu - c eps* (the noised point z_t lands on mu), one c for all three problems
    y, eps_star = descend(CDS, prior)
    c = -(y - mu) / eps_star
    assert 0.3 < c.mean().item() < 3.0 and (c.max() - c.min()).item() < 0.05
    assert ((y - mu).abs() <= 3.0 * eps_star.abs() + 0.05).all()
    # the flipped sign diverges
    y, _ = descend(FlippedCDS, prior)
    assert (y - mu).abs().min() > 100
