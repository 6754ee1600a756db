"""SDI (arXiv:2405.15891): enable_sdi=False is SDS with w = sigma / alpha; the inversion grid,
its cost, determinism at eta = 0, and exactness for a prior that knows the clean image."""

import torch
from toy_priors import GaussianToyPrior, prompt_batch

from sds3d.guidance.sdi import SDI, SDIConfig
from sds3d.guidance.sds import SDS, SDSConfig
from sds3d.types import RenderOutput


class KnowsYPrior(GaussianToyPrior):
    """Predicts exactly the noise relative to a known clean image y (whatever the prompt)."""

    y = None

    def predict_noise(self, x_t, t, text):
        alpha, sigma = self.alpha_sigma(t, x_t.ndim)
        return (x_t - alpha * self.y.repeat(x_t.shape[0] // self.y.shape[0], 1, 1, 1)) / sigma


def test_without_inversion_it_is_sds_with_sigma_over_alpha():
    prior = GaussianToyPrior({"obj": 0.7, "": 0.0})
    sdi = SDI(prior, SDIConfig(enable_sdi=False, guidance_scale=7.5))
    sds = SDS(prior, SDSConfig(guidance_scale=7.5, weighting="uniform"))
    g = torch.Generator().manual_seed(0)
    y, noise = torch.rand(3, 3, 4, 4, generator=g), torch.randn(3, 3, 4, 4, generator=g)
    t = torch.tensor([250, 600, 950])
    p = prompt_batch(prior, 3)
    grad = sdi.gradient(y, t, noise, p.cond, p.uncond, step=0)
    alpha, sigma = prior.alpha_sigma(t)
    expected = sigma / alpha * sds.gradient(y, t, noise, p.cond, p.uncond, step=0)
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5)
    mean = SDI(prior, SDIConfig(enable_sdi=False, mean_reduction=True)).gradient(y, t, noise, p.cond, p.uncond, 0)
    torch.testing.assert_close(mean, grad / y.numel())


def test_inversion_grid_and_cost():
    prior = GaussianToyPrior({"obj": 0.7, "": 0.0})
    sdi = SDI(prior)
    assert sdi.inversion_timesteps(980, 50) == [-99, 1, 101, 201, 301, 401, 501, 601, 701, 801, 901, 999]
    assert sdi.inversion_timesteps(250, 30) == [-99, 1, 101, 201, 280]
    assert sdi.inversion_timesteps(1, 0) == [-99, 1]
    assert sdi.unet_evals_per_step() == 2 * (10 + 1) + 2
    y = torch.rand(2, 3, 4, 4)
    p = prompt_batch(prior, 2)
    prior.calls = 0
    sdi.gradient(y, torch.tensor([250, 250]), None, p.cond, p.uncond, step=0, generator=torch.Generator().manual_seed(0))
    assert prior.calls == 2 * 2 * (4 + 1)  # 4 inversion steps (-99->1->101->201->t+d) + the final CFG


def test_inversion_is_deterministic_without_eta_and_exact_for_a_prior_that_knows_y():
    prior = KnowsYPrior({"obj": 0.7, "": 0.0})
    y = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    prior.y = y
    sdi = SDI(prior, SDIConfig(inversion_eta=0.0))
    p = prompt_batch(prior, 1)
    x_a, level = sdi.invert(y, 500, 40, p.cond, p.uncond)
    x_b, _ = sdi.invert(y, 500, 40, p.cond, p.uncond)
    assert torch.equal(x_a, x_b) and level == 540
    # x0_hat = y at every step, so the inversion stays on alpha y + sigma eps with the first step's eps
    abar = prior.alphas_cumprod
    eps0 = (y - abar[0].sqrt() * y) / (1 - abar[0]).sqrt()
    torch.testing.assert_close(x_a, abar[540].sqrt() * y + (1 - abar[540]).sqrt() * eps0, rtol=1e-4, atol=1e-5)
    # with eta > 0 the generator drives the extra noise
    noisy = SDI(prior, SDIConfig(inversion_eta=0.3))
    x_c, _ = noisy.invert(y, 500, 40, p.cond, p.uncond, torch.Generator().manual_seed(1))
    x_d, _ = noisy.invert(y, 500, 40, p.cond, p.uncond, torch.Generator().manual_seed(1))
    assert torch.equal(x_c, x_d) and not torch.allclose(x_c, x_a)


def test_call_anneals_t_and_backpropagates():
    prior = GaussianToyPrior({"obj": 0.7, "": 0.0})
    sdi = SDI(prior, total_steps=100)
    rgb = torch.full((2, 4, 4, 3), 0.2, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    ts = []
    for step in (0, 50, 100):
        out = sdi(RenderOutput(rgb=rgb, alpha=None, depth=None), prompt_batch(prior, 2), None, step, gen)
        ts.append(out.logs["t"])
        assert 0 <= out.logs["delta_t"] < 100
        out.loss.backward()
    assert ts == [980.0, 615.0, 250.0]
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


def test_without_the_jump_the_inversion_stops_at_t():
    """inversion_jump=False is delta = 0 (x_inv at level t, where the UNet and alpha_t, sigma_t evaluate
    it); the reference's jump to t + delta changes the gradient."""
    prior = GaussianToyPrior({"obj": 0.7, "": 0.0})
    y = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    p = prompt_batch(prior, 2)
    t = torch.tensor([300, 700])
    config = SDIConfig(inversion_eta=0.0)
    no_jump = SDI(prior, SDIConfig(inversion_eta=0.0, inversion_jump=False))
    grad = no_jump.gradient(y, t, None, p.cond, p.uncond, step=0, generator=torch.Generator().manual_seed(0))
    assert no_jump.last_logs["delta_t"] == 0.0
    torch.testing.assert_close(grad, SDI(prior, config).gradient(y, t, None, p.cond, p.uncond, step=0, delta=0))
    jump = SDI(prior, config).gradient(y, t, None, p.cond, p.uncond, step=0, delta=40)
    assert not torch.allclose(jump, grad, atol=1e-3)
