"""CSD (arXiv:2310.19415): a + b + c = 0 makes g invariant to a constant added to every branch;
identical conditions give g = 0; plain CSD is w (eps_c - eps_null)."""

import torch
from toy_priors import GaussianToyPrior, prompt_batch

from sds3d.guidance.csd import CSD, CSD_NEGATIVE_PROMPT, CSDConfig

MEANS = {"obj": 0.7, "": 0.0, CSD_NEGATIVE_PROMPT: 0.3}


class ShiftedPrior(GaussianToyPrior):
    """Adds the same constant to every eps prediction (every CFG branch)."""

    shift = 0.0

    def predict_noise(self, x_t, t, text):
        return super().predict_noise(x_t, t, text) + self.shift


def inputs(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 4, 4, generator=g), torch.randn(n, 3, 4, 4, generator=g), torch.tensor([100, 450, 900])[:n]


def test_zero_sum_weights_are_shift_invariant():
    prior = ShiftedPrior(MEANS)
    y, noise, t = inputs()
    p = prompt_batch(prior, 3)
    for step in (0, 5000, 10000):  # the default schedules keep a + b + c = 0 at every step
        csd = CSD(prior)
        assert abs(sum(csd.scales(step)[:3])) < 1e-12
        prior.shift = 0.0
        g = csd.gradient(y, t, noise, p.cond, p.uncond, step)
        prior.shift = 3.0
        torch.testing.assert_close(csd.gradient(y, t, noise, p.cond, p.uncond, step), g, rtol=1e-5, atol=1e-5)
    # a + b + c != 0: the shift leaks into g
    csd = CSD(prior, CSDConfig(cond_scale=1.0, negative_scale=-0.5, null_scale=0.0))
    prior.shift = 0.0
    g = csd.gradient(y, t, noise, p.cond, p.uncond, 0)
    prior.shift = 3.0
    assert (csd.gradient(y, t, noise, p.cond, p.uncond, 0) - g).abs().max() > 0.1


def test_identical_conditions_give_zero():
    prior = GaussianToyPrior({"same": 0.4, CSD_NEGATIVE_PROMPT: 0.4})
    csd = CSD(prior, CSDConfig.sd_refine(negative_prompt="same"))
    y, noise, t = inputs(seed=1)
    p = prompt_batch(prior, 3, prompt="same", uncond="same")
    for step in (0, 3000, 10000):
        assert csd.gradient(y, t, noise, p.cond, p.uncond, step).abs().max() < 1e-6


def test_plain_csd_is_the_classifier_direction_and_cost():
    prior = GaussianToyPrior(MEANS)
    csd = CSD(prior, CSDConfig())
    y, noise, t = inputs(seed=2)
    p = prompt_batch(prior, 3)
    prior.calls = 0
    g = csd.gradient(y, t, noise, p.cond, p.uncond, 0)
    assert prior.calls == 2 * 3 and csd.unet_evals_per_step() == 2
    x_t = prior.add_noise(y, noise, t)
    alpha, sigma = prior.alpha_sigma(t)
    expected = sigma**2 * (prior.predict_noise(x_t, t, p.cond) - prior.predict_noise(x_t, t, p.uncond))
    torch.testing.assert_close(g, expected)
    assert CSD(prior, CSDConfig.sd_refine()).unet_evals_per_step() == 3
    # the negative branch pushes away from the negative prompt: b < 0 and y between the means
    full = CSD(prior, CSDConfig(negative_scale=-1.0, null_scale=0.0))
    assert full.gradient(torch.full((64, 1, 1, 1), 0.5), torch.full((64,), 300), torch.zeros(64, 1, 1, 1),
                         prompt_batch(prior, 64).cond, prompt_batch(prior, 64).uncond, 0).mean() < 0
