"""NFSD (arXiv:2310.17590): t < 200 gives SDS_df(s) + w eps; t >= 200 with p_neg = "" gives CSD."""

import torch
from toy_priors import GaussianToyPrior, prompt_batch

from sds3d.guidance.csd import CSD, CSDConfig
from sds3d.guidance.nfsd import NFSD, NFSD_NEGATIVE_PROMPT, NFSDConfig
from sds3d.guidance.sds import SDS, SDSConfig
from sds3d.types import RenderOutput

MEANS = {"obj": 0.7, "": 0.0, NFSD_NEGATIVE_PROMPT: 0.3}


def inputs(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 4, 4, generator=g), torch.randn(n, 3, 4, 4, generator=g)


def test_small_t_is_sds_plus_weighted_noise():
    prior = GaussianToyPrior(MEANS)
    nfsd, sds = NFSD(prior), SDS(prior, SDSConfig(guidance_scale=7.5))
    y, noise = inputs()
    t = torch.tensor([20, 90, 150, 199])
    p = prompt_batch(prior, 4)
    g = nfsd.gradient(y, t, noise, p.cond, p.uncond, step=0)
    alpha, sigma = prior.alpha_sigma(t)
    expected = sds.gradient(y, t, noise, p.cond, p.uncond, step=0) + sigma**2 * noise
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-6)


def test_large_t_with_empty_negative_prompt_is_csd():
    prior = GaussianToyPrior(MEANS)
    nfsd = NFSD(prior, NFSDConfig(negative_prompt=""))
    csd = CSD(prior, CSDConfig())  # plain CSD: (a, b, c, d) = (1, 0, -1, 0)
    y, noise = inputs(seed=1)
    t = torch.tensor([200, 400, 700, 980])
    p = prompt_batch(prior, 4)
    g = nfsd.gradient(y, t, noise, p.cond, p.uncond, step=0)
    torch.testing.assert_close(g, 7.5 * csd.gradient(y, t, noise, p.cond, p.uncond, step=0), rtol=1e-5, atol=1e-6)
    # with the real negative prompt delta_D = eps_null - eps_neg is not zero
    g_neg = NFSD(prior).gradient(y, t, noise, p.cond, p.uncond, step=0)
    assert (g_neg - g).abs().max() > 1e-3


def test_threshold_switches_per_view_and_cost_is_three():
    prior = GaussianToyPrior(MEANS)
    nfsd = NFSD(prior)
    y, noise = inputs(n=2, seed=2)
    p = prompt_batch(prior, 2)
    t = torch.tensor([199, 200])
    prior.calls = 0
    g = nfsd.gradient(y, t, noise, p.cond, p.uncond, step=0)
    assert prior.calls == 3 * 2 and nfsd.unet_evals_per_step() == 3
    for i in range(2):  # each view follows its own branch
        gi = nfsd.gradient(y[i:i + 1], t[i:i + 1], noise[i:i + 1], p.cond[[i]], p.uncond[[i]], step=0)
        torch.testing.assert_close(g[i:i + 1], gi)


def test_descent_moves_towards_the_prompt():
    prior = GaussianToyPrior(MEANS, s0=0.2)
    nfsd = NFSD(prior, NFSDConfig(guidance_scale=1.0))
    rgb = torch.full((1, 4, 4, 3), 0.1, requires_grad=True)
    opt = torch.optim.SGD([rgb], lr=0.2)
    gen = torch.Generator().manual_seed(0)
    for step in range(300):
        out = nfsd(RenderOutput(rgb=rgb, alpha=None, depth=None), prompt_batch(prior, 1), None, step, gen)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert rgb.mean().item() > 0.4  # pulled from 0.1 towards the conditional mean 0.7
