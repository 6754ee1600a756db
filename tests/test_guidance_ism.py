"""ISM and TSM (arXiv:2311.11284, arXiv:2405.11252): ISM's `sds` switch is SDS with w = sigma / alpha; TSM with
gamma = 1 is exactly ISM; the DDIM inversion is exact for a prior that knows the clean image; costs;
TSM's pixel-wise clipping hook."""

import math

import torch
from toy_priors import GaussianToyPrior, prompt_batch

from sds3d.guidance.ism import ISM, ISMConfig
from sds3d.guidance.sds import SDS, SDSConfig
from sds3d.guidance.tsm import TSM, TSMConfig, pixelwise_clip
from sds3d.types import RenderOutput

MEANS = {"obj": 0.7, "": 0.0}


def inputs(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 4, 4, generator=g), torch.randn(n, 3, 4, 4, generator=g)


class KnowsYPrior(GaussianToyPrior):
    """Predicts exactly the noise relative to a known clean image y (whatever the prompt)."""

    y = None

    def predict_noise(self, x_t, t, text):
        self.calls += x_t.shape[0]
        alpha, sigma = self.alpha_sigma(t, x_t.ndim)
        return (x_t - alpha * self.y.repeat(x_t.shape[0] // self.y.shape[0], 1, 1, 1)) / sigma


def test_sds_switch_is_sds_with_sigma_over_alpha():
    prior = GaussianToyPrior(MEANS)
    ism = ISM(prior, ISMConfig(sds=True))
    sds = SDS(prior, SDSConfig(guidance_scale=7.5, weighting="uniform"))
    y, noise = inputs()
    t = torch.tensor([300, 800])
    p = prompt_batch(prior, 2)
    alpha, sigma = prior.alpha_sigma(t)
    expected = sigma / alpha * sds.gradient(y, t, noise, p.cond, p.uncond, step=0)
    assert torch.equal(ism.gradient(y, t, noise, p.cond, p.uncond, step=0), expected)
    # the interval target differs from eps (the test can fail)
    assert (ISM(prior).gradient(y, t, noise, p.cond, p.uncond, step=0) - expected).abs().max() > 1e-3


def test_inversion_is_exact_for_a_prior_that_knows_y_and_costs_as_the_card():
    prior = KnowsYPrior(MEANS)
    y, noise = inputs(n=1, seed=1)
    prior.y = y
    ism = ISM(prior)
    abar = prior.alphas_cumprod
    for s in (0, 150, 420, 900):
        prior.calls = 0
        x_s, eps_s = ism.invert_to(y, noise, s)
        torch.testing.assert_close(x_s, abar[s].sqrt() * y + (1 - abar[s]).sqrt() * noise, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(eps_s, noise, rtol=1e-3, atol=1e-3)
        assert prior.calls == max(math.ceil(s / 200), 1) + 1  # <= xs_inv_steps + 1 unconditional items
    # so ISM's target equals the injected noise and g vanishes (eps_hat = eps for this prior)
    t = torch.tensor([500])
    g = ism.gradient(y, t, noise, prompt_batch(prior, 1).cond, prompt_batch(prior, 1).uncond, step=5000)
    assert g.abs().max() < 1e-3
    assert ism.unet_evals_per_step() == 5 + 1 + 2 and ISM(prior, ISMConfig(sds=True)).unet_evals_per_step() == 2


def test_gradient_has_no_rng_and_delta_t_anneals():
    prior = GaussianToyPrior(MEANS)
    ism = ISM(prior)
    y, noise = inputs(seed=2)
    t = torch.tensor([600, 600])
    p = prompt_batch(prior, 2)
    assert torch.equal(ism.gradient(y, t, noise, p.cond, p.uncond, 10), ism.gradient(y, t, noise, p.cond, p.uncond, 10))
    assert [ism.delta_t(s) for s in (0, 750, 1500, 5000)] == [100, 90, 80, 80]


def test_tsm_with_gamma_one_is_exactly_ism():
    prior = GaussianToyPrior(MEANS)
    y, noise = inputs(seed=3)
    p = prompt_batch(prior, 2)
    ism, tsm = ISM(prior), TSM(prior, TSMConfig(gamma=1.0))
    for t in (torch.tensor([120, 120]), torch.tensor([700, 700]), torch.tensor([300, 900])):
        for step in (0, 2000):
            prior.calls = 0
            g_tsm = tsm.gradient(y, t, noise, p.cond, p.uncond, step)
            calls = prior.calls
            prior.calls = 0
            assert torch.equal(g_tsm, ism.gradient(y, t, noise, p.cond, p.uncond, step))
            assert calls == prior.calls  # x_mu = x_s: no extra evaluation
    assert tsm.unet_evals_per_step() == ism.unet_evals_per_step()
    # through __call__ with the same generator, down to the render gradient
    grads = []
    for guidance in (ISM(prior), TSM(prior, TSMConfig(gamma=1.0))):
        rgb = torch.full((2, 4, 4, 3), 0.3, requires_grad=True)
        guidance(RenderOutput(rgb=rgb, alpha=None, depth=None), p, None, 7, torch.Generator().manual_seed(5)).loss.backward()
        grads.append(rgb.grad)
    assert torch.equal(grads[0], grads[1])


def test_tsm_default_gamma_uses_a_second_path():
    prior = GaussianToyPrior(MEANS)
    tsm = TSM(prior)
    assert tsm.mu(400, 500) == round(400 + 100 * math.sqrt(1 - 0.09))
    y, noise = inputs(seed=4)
    t = torch.tensor([700, 700])
    p = prompt_batch(prior, 2)
    prior.calls = 0
    g = tsm.gradient(y, t, noise, p.cond, p.uncond, 2000)
    calls_tsm = prior.calls
    prior.calls = 0
    g_ism = ISM(prior).gradient(y, t, noise, p.cond, p.uncond, 2000)
    assert calls_tsm == prior.calls + 2  # one more unconditional item per view
    assert tsm.unet_evals_per_step() == ISM(prior).unet_evals_per_step() + 1
    assert (g - g_ism).abs().max() > 1e-4


def test_pixelwise_clip_keeps_direction_and_bounds_each_pixel():
    g = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(6))
    clipped = pixelwise_clip(g, 0.05)
    assert clipped.abs().amax(dim=1).max() <= 0.05 + 1e-7
    ratio = clipped / g  # one scale per pixel, shared by its channels
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))
    assert torch.equal(pixelwise_clip(g * 1e-3, 0.05), g * 1e-3)
    # the hook acts on the render gradient of the guidance loss
    prior = GaussianToyPrior(MEANS)
    rgb = torch.full((1, 4, 4, 3), 0.3, requires_grad=True)
    TSM(prior, TSMConfig(pixel_grad_clip=1e-4))(RenderOutput(rgb=rgb, alpha=None, depth=None), prompt_batch(prior, 1), None, 0,
                                               torch.Generator().manual_seed(0)).loss.backward()
    assert 0 < rgb.grad.abs().amax(dim=-1).max() <= 1e-4 + 1e-9
