"""Perp-Neg: the combined negative term is orthogonal to the positive direction, per sample; the
threestudio view weights; prompt interpolation; cost 4 per guided evaluation."""

import math

import pytest
import torch
from toy_priors import GaussianToyPrior

from sds3d.cameras import Cameras
from sds3d.guidance.perp_neg import (guided_eps, guided_noise_perp_neg, perp_neg_combine, perp_neg_prompts,
                                     perp_neg_term, perpendicular_component, view_weights)
from sds3d.guidance.priors.prior import cfg_combine, guided_noise
from sds3d.prompts import PromptBatch


def test_perpendicular_component_is_orthogonal_per_sample():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    p = perpendicular_component(x, y)
    assert (p * y).sum(dim=(1, 2, 3)).abs().max() < 1e-4
    # what was removed is parallel to y
    parallel = x - p
    cos = (parallel * y).sum(dim=(1, 2, 3)) / (parallel.flatten(1).norm(dim=1) * y.flatten(1).norm(dim=1))
    torch.testing.assert_close(cos.abs(), torch.ones(3))


def test_combined_negative_term_is_orthogonal_to_the_positive_term():
    g = torch.Generator().manual_seed(1)
    eps_pos, eps_u, n1, n2 = (torch.randn(4, 4, 8, 8, generator=g) for _ in range(4))
    weights = torch.tensor([[-1.5, -0.3], [0.0, -2.0], [-0.7, 0.0], [-1.0, -1.0]])
    e_pos = eps_pos - eps_u
    term = perp_neg_term(e_pos, eps_u, [n1, n2], weights)
    assert term.abs().sum() > 1.0  # non-trivial
    dots = (term * e_pos).sum(dim=(1, 2, 3)) / e_pos.flatten(1).norm(dim=1) / term.flatten(1).norm(dim=1).clamp_min(1e-12)
    assert dots.abs().max() < 1e-5
    # and the plain negatives are not orthogonal (the test can fail)
    raw = weights[:, :1, None, None] * (n1 - eps_u) + weights[:, 1:, None, None] * (n2 - eps_u)
    assert ((raw * e_pos).sum(dim=(1, 2, 3)).abs() > 1e-2).any()
    combined = perp_neg_combine(eps_pos, eps_u, [n1, n2], weights, 7.5)
    torch.testing.assert_close(combined, eps_u + 7.5 * (e_pos + term))
    torch.testing.assert_close(perp_neg_combine(eps_pos, eps_u, [n1, n2], torch.zeros(4, 2), 7.5),
                               cfg_combine(eps_pos, eps_u, 7.5))


def f(a, b, c, r):
    return a * math.exp(-b * r) + c


def test_view_weights_follow_threestudio():
    (a, b, r), negs, w = view_weights("front", 0.0)
    assert (a, b, r, negs) == ("front", "side", 1.0, ("front", "side"))
    assert w == pytest.approx((-f(4, 0.5, -2.426, 1.0), -f(4, 0.5, -2.426, 0.0)))
    assert abs(w[0]) < 1e-3  # f_fs(1) = 0: no "front" negative on the front view
    (a, b, r), negs, w = view_weights("side", -45.0)
    assert (a, b, r) == ("front", "side", 0.5)
    (a, b, r), negs, w = view_weights("back", 180.0)
    assert (a, b, r, negs) == ("side", "back", 0.0, ("side", "front"))
    assert w == pytest.approx((-f(1, 0.5, -0.606, 0.0), -f(1, 0.5, 0.967, 0.0)))
    assert view_weights("overhead", 30.0)[2] == (0.0, 0.0)


def cameras(azimuths):
    n = len(azimuths)
    return Cameras(viewmats=torch.eye(4).repeat(n, 1, 1), Ks=torch.eye(3).repeat(n, 1, 1), width=4, height=4,
                   elevation=torch.zeros(n), azimuth=torch.tensor(azimuths, dtype=torch.float32))


def test_prompts_interpolate_views_and_cost_four_items():
    means = {"obj, front view": 1.0, "obj, side view": 0.0, "obj, back view": -1.0, "obj, overhead view": 5.0, "": 0.0}
    prior = GaussianToyPrior(means)
    texts = ["obj, front view", "obj, side view", "obj, back view"]
    prompts = PromptBatch(cond=prior.encode_prompts(texts), uncond=prior.encode_prompts([""] * 3), texts=texts,
                          views=["front", "side", "back"])
    perp = perp_neg_prompts(prior, prompts, cameras([30.0, 90.0, 135.0]))
    # 30 deg: r = 2/3 front + 1/3 side; 90 deg: side; 135 deg: r = 0.5 side + 0.5 back
    torch.testing.assert_close(perp.positive.hidden[:, 0, 0], torch.tensor([2 / 3, 0.0, -0.5]))
    assert perp.weights.shape == (3, 2)
    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([300, 300, 300])
    prior.calls = 0
    eps, eps_pos, eps_u = guided_noise_perp_neg(prior, x, t, perp, prompts.uncond, 7.5)
    assert prior.calls == 4 * 3
    torch.testing.assert_close(eps_pos, prior.predict_noise(x, t, perp.positive))
    # zero weights reduce to plain CFG on the interpolated prompt
    perp.weights.zero_()
    torch.testing.assert_close(guided_eps(prior, x, t, prompts.cond, prompts.uncond, 7.5, perp),
                               guided_noise(prior, x, t, perp.positive, prompts.uncond, 7.5)[0])


def test_view_independent_prompts_are_rejected():
    prior = GaussianToyPrior({"obj": 1.0, "": 0.0})
    prompts = PromptBatch(cond=prior.encode_prompts(["obj"]), uncond=prior.encode_prompts([""]), texts=["obj"], views=["any"])
    with pytest.raises(ValueError, match="view-dependent"):
        perp_neg_prompts(prior, prompts, cameras([0.0]))
