"""Editing scores (DDS arXiv:2304.07090, PDS arXiv:2311.13831, SSD arXiv:2507.09168, SDS baseline) on the
exact-denoiser Gaussian toy prior: the shared contract every registered score passes, zero gradient for
identical source and target, PDS's posterior term against the Gaussian posterior, the diffusers CFG
convention, and descent on the toy."""

import pytest
import torch
from toy_priors import GaussianToyPrior, ddpm_alphas_cumprod

from sds3d.guidance.edit.base import EDIT_SCORES, build_edit_score, edit_score_class
from sds3d.guidance.edit.dds import DDS, DDSConfig
from sds3d.guidance.edit.pds import PDS, PDSConfig, ddpm_betas
from sds3d.guidance.edit.sds import EditSDS, EditSDSConfig
from sds3d.guidance.edit.ssd import SSD, SSDConfig
from sds3d.guidance.priors.prior import threestudio_scale_to_diffusers
from sds3d.prompts import PromptBatch
from sds3d.types import RenderOutput

pytestmark = pytest.mark.usefixtures("one_thread")
MEANS = {"src": 0.2, "tgt": 0.7, "": 0.0}
S0 = 0.3


def prompts(prior, text, n):
    return PromptBatch(cond=prior.encode_prompts([text] * n), uncond=prior.encode_prompts([""] * n),
                       texts=[text] * n, views=["any"] * n)


def render(rgb):
    return RenderOutput(rgb=rgb, alpha=None, depth=None)


def images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 4, 4, 3, generator=g), torch.rand(n, 4, 4, 3, generator=g)


def gaussian_eps(prior, x, t, mu):
    """The toy's exact eps-prediction sigma (x - alpha mu) / (alpha^2 s0^2 + sigma^2), written out."""
    alpha, sigma = prior.alpha_sigma(t, x.ndim)
    return sigma * (x - alpha * mu) / (alpha**2 * prior.s0**2 + sigma**2)


# ----- the contract every registered score passes --------------------------------------------------

@pytest.mark.parametrize("name", sorted(EDIT_SCORES))
def test_contract_target_trick_cost_and_replay(name):
    prior = GaussianToyPrior(MEANS, s0=S0)
    score = build_edit_score(name, prior)
    assert score.name == name and isinstance(score.config, edit_score_class(name)[1])
    rgb, src = images()
    rgb.requires_grad_(True)
    n = rgb.shape[0]
    prior.calls = 0
    out = score(render(rgb), render(src), prompts(prior, "tgt", n), prompts(prior, "src", n), 7,
                torch.Generator().manual_seed(3))
    assert prior.calls == score.unet_evals_per_step() * n
    out.loss.backward()
    # replay the same draws: dL/drender = g / B (the toy prior's latents are the render itself)
    gen = torch.Generator().manual_seed(3)
    y, y_src = rgb.detach().permute(0, 3, 1, 2), src.permute(0, 3, 1, 2)
    t = score.sample_timesteps(7, n, gen)
    noise = [torch.randn(y.shape, generator=gen) for _ in range(score.noises)]
    g = score.gradient(y, y_src if score.needs_source else None, t, noise, prior.encode_prompts(["tgt"] * n),
                       prior.encode_prompts(["src"] * n), prior.encode_prompts([""] * n), 7)
    assert torch.isfinite(g).all() and g.abs().max() > 0
    assert torch.equal(rgb.grad, (g / n).permute(0, 2, 3, 1))
    assert out.logs["grad_norm"] == pytest.approx(g.norm().item())


@pytest.mark.parametrize("name", ["dds", "pds"])
def test_identical_source_and_target_give_exactly_zero(name):
    prior = GaussianToyPrior(MEANS, s0=S0)
    score = build_edit_score(name, prior)
    rgb, _ = images(n=4, seed=1)
    rgb.requires_grad_(True)
    out = score(render(rgb), render(rgb.detach().clone()), prompts(prior, "tgt", 4), prompts(prior, "tgt", 4), 0,
                torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.equal(rgb.grad, torch.zeros_like(rgb))


def test_unknown_name_and_missing_source_fail():
    prior = GaussianToyPrior(MEANS)
    with pytest.raises(ValueError, match="unknown editing guidance 'magic'; choose one of pds, dds, ssd, sds"):
        build_edit_score("magic", prior)
    rgb, _ = images(n=1)
    with pytest.raises(ValueError, match="needs the source render"):
        DDS(prior)(render(rgb), None, prompts(prior, "tgt", 1), prompts(prior, "src", 1), 0)
    EditSDS(prior)(render(rgb), None, prompts(prior, "tgt", 1), prompts(prior, "src", 1), 0)  # SDS does not


# ----- DDS: diffusers-form CFG, the closed form on the toy, descent ----------------------------------

def test_dds_is_the_closed_form_difference_with_diffusers_cfg():
    prior = GaussianToyPrior(MEANS, s0=S0)
    y, y_src = (x.permute(0, 3, 1, 2) for x in images(n=4, seed=2))
    t = torch.tensor([60, 300, 600, 940])
    noise = [torch.randn(y.shape, generator=torch.Generator().manual_seed(5))]
    emb = {k: prior.encode_prompts([k] * 4) for k in MEANS}
    alpha, sigma = prior.alpha_sigma(t)
    v = alpha**2 * S0**2 + sigma**2
    for s in (1.0, 7.5):
        g = DDS(prior, DDSConfig(guidance_scale=s)).gradient(y, y_src, t, noise, emb["tgt"], emb["src"], emb[""], 0)
        # eps_u + s (eps_c - eps_u) with exact eps: g = sigma alpha / v ((y - y_src) - s (mu_tgt - mu_src)), eps-free
        expected = sigma * alpha / v * ((y - y_src) - s * (MEANS["tgt"] - MEANS["src"]))
        torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-5)
    # threestudio's scale s_ts is the diffusers scale s_ts + 1
    ts = 6.5
    g_df = DDS(prior, DDSConfig(guidance_scale=threestudio_scale_to_diffusers(ts))).gradient(
        y, y_src, t, noise, emb["tgt"], emb["src"], emb[""], 0)
    z_t, z_s = prior.add_noise(y, noise[0], t), prior.add_noise(y_src, noise[0], t)
    ts_form = lambda z, mu: gaussian_eps(prior, z, t, mu) + ts * (gaussian_eps(prior, z, t, mu)  # noqa: E731
                                                                  - gaussian_eps(prior, z, t, 0.0))
    torch.testing.assert_close(g_df, ts_form(z_t, MEANS["tgt"]) - ts_form(z_s, MEANS["src"]), rtol=1e-4, atol=1e-5)


def test_dds_descent_reaches_the_source_shifted_by_the_prompt_difference():
    prior = GaussianToyPrior(MEANS, s0=S0)
    dds = DDS(prior, DDSConfig(guidance_scale=1.0))
    src = 0.2 + 0.1 * torch.linspace(-1, 1, 16).reshape(1, 4, 4, 1).expand(1, 4, 4, 3)  # a pattern to keep
    rgb = src.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([rgb], lr=2.0)
    gen = torch.Generator().manual_seed(0)
    for step in range(400):
        out = dds(render(rgb), render(src), prompts(prior, "tgt", 1), prompts(prior, "src", 1), step, gen)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    torch.testing.assert_close(rgb.detach(), src + 0.5, atol=0.01, rtol=0)  # fixed point y_src + (mu_tgt - mu_src)


# ----- PDS: the posterior term, the grid, identity kept ---------------------------------------------

def test_pds_betas_recover_the_ddpm_schedule():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64).float()
    torch.testing.assert_close(ddpm_betas(ddpm_alphas_cumprod()), betas, rtol=2e-4, atol=1e-7)


def test_pds_gradient_matches_the_gaussian_posterior():
    """With the exact denoiser (scale 1), x0_hat = E[x0 | x_t] = mu + alpha s0^2 (x_t - alpha mu) / v, and
    zeta = (x_prev - mu_post) / s_t with the DDPM posterior q(x_prev | x_t, x0_hat) written from the betas."""
    prior = GaussianToyPrior(MEANS, s0=S0)
    pds = PDS(prior, PDSConfig(guidance_scale=1.0, grid_steps=500))
    y, y_src = (x.permute(0, 3, 1, 2) for x in images(n=3, seed=4))
    t = torch.tensor([20, 500, 960])
    gen = torch.Generator().manual_seed(9)
    noise = [torch.randn(y.shape, generator=gen) for _ in range(2)]
    emb = {k: prior.encode_prompts([k] * 3) for k in MEANS}
    g = pds.gradient(y, y_src, t, noise, emb["tgt"], emb["src"], emb[""], 0)

    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    expected = []
    for i, ti in enumerate(t.tolist()):
        tp = ti - 2  # one stride of the 500-step grid below t
        a_t, a_p, b_t = abar[ti], abar[tp], betas[ti]
        alpha, sigma = a_t.sqrt(), (1 - a_t).sqrt()
        v = alpha**2 * S0**2 + sigma**2
        zetas = []
        for x0, mu in ((y[i].double(), MEANS["tgt"]), (y_src[i].double(), MEANS["src"])):
            x_t = alpha * x0 + sigma * noise[0][i].double()
            x0_hat = mu + alpha * S0**2 * (x_t - alpha * mu) / v
            mean = (a_p.sqrt() * b_t * x0_hat + (1 - b_t).sqrt() * (1 - a_p) * x_t) / (1 - a_t)
            x_prev = a_p.sqrt() * x0 + (1 - a_p).sqrt() * noise[1][i].double()
            zetas.append((x_prev - mean) / ((1 - a_p) * b_t / (1 - a_t)).sqrt())
        expected.append(zetas[0] - zetas[1])
    torch.testing.assert_close(g.double(), torch.stack(expected), rtol=2e-3, atol=2e-3)


def test_pds_timesteps_lie_on_the_grid_within_the_range():
    prior = GaussianToyPrior(MEANS)
    pds = PDS(prior, PDSConfig(grid_steps=250))
    t = pds.sample_timesteps(0, 5000, torch.Generator().manual_seed(0))
    assert (t % 4 == 0).all() and t.min() == 4 * int(250 * 0.02) and t.max() == 4 * (int(250 * 0.98) - 1)
    with pytest.raises(ValueError, match="grid_steps"):
        PDS(prior, PDSConfig(grid_steps=1))


def descend(score, src, steps=300, lr=0.05):
    prior = score.prior
    rgb = src.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([rgb], lr=lr)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        out = score(render(rgb), render(src), prompts(prior, "tgt", 2), prompts(prior, "src", 2), step, gen)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    return rgb.detach()


def test_pds_and_dds_move_towards_the_target_and_keep_the_pattern_that_sds_loses():
    prior = GaussianToyPrior(MEANS, s0=0.2)
    pattern = 0.15 * torch.linspace(-1, 1, 16).reshape(1, 4, 4, 1).expand(2, 4, 4, 3)
    src = 0.2 + pattern
    scores = {"pds": PDS(prior, PDSConfig(guidance_scale=1.0)), "dds": DDS(prior, DDSConfig(guidance_scale=1.0)),
              "sds": EditSDS(prior, EditSDSConfig(guidance_scale=1.0))}
    after = {name: descend(score, src) for name, score in scores.items()}
    # from 0.2 towards the target mean 0.7: SDS and DDS all the way, PDS part of it at scale 1 (its
    # fixed point on this toy is a t-dependent fraction of the prompt difference)
    means = {name: rgb.mean().item() for name, rgb in after.items()}
    assert means["pds"] > 0.3 and means["dds"] > 0.65 and means["sds"] > 0.65, means
    kept = {name: (((rgb - rgb.mean()) * pattern).sum() / (pattern**2).sum()).item() for name, rgb in after.items()}
    assert kept["pds"] > 0.95 and kept["dds"] > 0.95 and abs(kept["sds"]) < 0.2, kept


# ----- SSD --------------------------------------------------------------------------------------------

def test_ssd_source_term_is_independent_of_the_noise():
    prior = GaussianToyPrior(MEANS, s0=S0)
    ssd = SSD(prior, SSDConfig(image_scale=0.0, guidance_scale=0.0, enhance_scale=0.0))
    y, y_src = (x.permute(0, 3, 1, 2) for x in images(n=3, seed=6))
    t = torch.tensor([30, 480, 970])
    emb = {k: prior.encode_prompts([k] * 3) for k in MEANS}
    alpha, _ = prior.alpha_sigma(t)
    expected = 0.075 * torch.exp(t / 1000.0).reshape(-1, 1, 1, 1) * alpha * (y - y_src)
    for seed in (0, 1):
        noise = [torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))]
        torch.testing.assert_close(ssd.gradient(y, y_src, t, noise, emb["tgt"], emb["src"], emb[""], 0), expected)


def test_ssd_branches_match_their_definition():
    prior = GaussianToyPrior(MEANS, s0=S0)
    c = SSDConfig()
    y, y_src = (x.permute(0, 3, 1, 2) for x in images(n=2, seed=8))
    t = torch.tensor([100, 700])
    noise = [torch.randn(y.shape, generator=torch.Generator().manual_seed(2))]
    emb = {k: prior.encode_prompts([k] * 2) for k in MEANS}
    g = SSD(prior, c).gradient(y, y_src, t, noise, emb["tgt"], emb["src"], emb[""], 0)
    z_t, z_s = prior.add_noise(y, noise[0], t), prior.add_noise(y_src, noise[0], t)
    eps = lambda z, mu: gaussian_eps(prior, z, t, mu)  # noqa: E731
    expected = (0.5 * 2.0 * (eps(z_t, 0.2) - eps(z_s, 0.0)) + 0.5 * 7.5 * (eps(z_t, 0.7) - eps(z_t, 0.2))
                + 5.5 * (eps(z_t, 0.7) - eps(z_t, 0.0))
                + 0.075 * torch.exp(t / 1000).reshape(-1, 1, 1, 1) * (z_t - z_s))
    torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-5)
