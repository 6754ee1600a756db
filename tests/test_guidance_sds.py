"""SDS (DreamFusion, arXiv:2209.14988): target trick, CFG convention, the exact-denoiser Gaussian toy."""

import pytest
import torch
from toy_priors import GaussianToyPrior, prompt_batch

from sds3d.guidance.base import clip_gradient, target_trick_loss
from sds3d.guidance.priors.prior import cfg_combine, threestudio_scale_to_diffusers
from sds3d.guidance.schedules import TimestepConfig
from sds3d.guidance.sds import SDS, SDSConfig
from sds3d.types import RenderOutput


def test_target_trick_gives_g_over_b_exactly():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(3, 4, 8, 8, generator=g, requires_grad=True)
    grad = torch.randn(3, 4, 8, 8, generator=g)
    loss = target_trick_loss(y, grad)
    loss.backward()
    assert torch.equal(y.grad, grad / 3)
    literal = 0.5 * ((y - (y - grad).detach()) ** 2).sum() / 3  # the paper's formula
    torch.testing.assert_close(loss, literal)


def test_threestudio_scale_is_diffusers_scale_plus_one():
    g = torch.Generator().manual_seed(1)
    eps_c, eps_u = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    for s in (0.0, 7.5, 100.0):
        ts = eps_c + s * (eps_c - eps_u)  # threestudio's form
        torch.testing.assert_close(cfg_combine(eps_c, eps_u, threestudio_scale_to_diffusers(s)), ts)
    torch.testing.assert_close(cfg_combine(eps_c, eps_u, 1.0), eps_c)


class InjectedNoisePrior(GaussianToyPrior):
    """Returns exactly the noise that was added to the current y (a perfect 'mock UNet')."""

    y = None

    def predict_noise(self, x_t, t, text):
        alpha, sigma = self.alpha_sigma(t, x_t.ndim)
        return (x_t - alpha * self.y.repeat(x_t.shape[0] // self.y.shape[0], 1, 1, 1)) / sigma


def test_injected_noise_and_no_guidance_gives_zero_gradient():
    prior = InjectedNoisePrior({"obj": 0.3, "": 0.0})
    sds = SDS(prior, SDSConfig(guidance_scale=1.0))  # df 1 == threestudio 0: no guidance
    y = torch.rand(2, 3, 4, 4)
    prior.y = y
    grad = sds.gradient(y, torch.tensor([100, 900]), torch.randn(2, 3, 4, 4), prompt_batch(prior, n=2).cond,
                        prompt_batch(prior, n=2).uncond, step=0)
    assert grad.abs().max() < 1e-5


@pytest.mark.parametrize("t", [50, 300, 700, 950])
@pytest.mark.parametrize("weighting", ["sds", "uniform", "fantasia3d"])
def test_expected_gradient_matches_closed_form(t, weighting):
    mu, s0 = 0.7, 0.5
    prior = GaussianToyPrior({"obj": mu, "": 0.0}, s0=s0)
    sds = SDS(prior, SDSConfig(guidance_scale=1.0, weighting=weighting))
    n = 20000
    y = torch.full((1, 1, 1, 1), 0.1).expand(n, 1, 1, 1)
    ts = torch.full((n,), t)
    noise = torch.randn(n, 1, 1, 1, generator=torch.Generator().manual_seed(t))
    prompts = prompt_batch(prior, n=n)
    grad = sds.gradient(y, ts, noise, prompts.cond, prompts.uncond, step=0)
    alpha, sigma = (v.item() for v in prior.alpha_sigma(torch.tensor([t])))
    w = {"sds": sigma**2, "uniform": 1.0, "fantasia3d": alpha * sigma**2}[weighting]
    expected = w * alpha * sigma * (0.1 - mu) / (alpha**2 * s0**2 + sigma**2)
    spread = w * (1 - sigma**2 / (alpha**2 * s0**2 + sigma**2))  # std of g per sample
    assert grad.mean().item() == pytest.approx(expected, abs=4 * spread / n**0.5 + 1e-7)


def test_descent_converges_to_the_mode():
    prior = GaussianToyPrior({"obj": 0.6, "": 0.0}, s0=0.2)
    sds = SDS(prior, SDSConfig(guidance_scale=1.0), total_steps=1500)
    rgb = torch.full((1, 4, 4, 3), 0.05, requires_grad=True)
    optimizer = torch.optim.SGD([rgb], lr=0.5)
    generator = torch.Generator().manual_seed(0)
    for step in range(1500):
        out = sds(RenderOutput(rgb=rgb, alpha=None, depth=None), prompt_batch(prior), None, step, generator)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert rgb.mean().item() == pytest.approx(0.6, abs=0.03)


def test_guidance_pushes_towards_the_conditional_mean():
    prior = GaussianToyPrior({"obj": 0.9, "": 0.0}, s0=0.3)
    low, high = (SDS(prior, SDSConfig(guidance_scale=s)) for s in (1.0, 10.0))
    y = torch.full((64, 1, 2, 2), 0.5)
    t, noise = torch.full((64,), 500), torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    p = prompt_batch(prior, n=64)
    g_low = low.gradient(y, t, noise, p.cond, p.uncond, 0).mean()
    g_high = high.gradient(y, t, noise, p.cond, p.uncond, 0).mean()
    assert g_high < g_low < 0  # descent moves y up towards 0.9, more strongly with guidance


def test_clipping_clamps_and_never_hides_a_non_finite_guidance():
    grad = torch.tensor([float("nan"), float("inf"), -5.0, 0.5])
    unclipped, clipped = clip_gradient(grad, None), clip_gradient(grad, 2.0)
    assert unclipped[0].isnan() and unclipped[1:].tolist() == [float("inf"), -5.0, 0.5]
    assert clipped[0].isnan() and clipped[1:].tolist() == [2.0, -2.0, 0.5]


def test_timesteps_follow_configured_range_and_unknown_weighting_fails():
    prior = GaussianToyPrior({"obj": 0.5, "": 0.0})
    sds = SDS(prior, SDSConfig(timesteps=TimestepConfig(min_step_percent=0.2, max_step_percent=0.3)))
    t = sds.schedule.sample(0, 5000, torch.Generator().manual_seed(0))
    assert t.min() == 200 and t.max() == 300
    with pytest.raises(ValueError, match="unknown weighting"):
        SDS(prior, SDSConfig(weighting="magic"))
