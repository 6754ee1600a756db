"""The shared DDIM step against diffusers' DDIMScheduler / DDIMInverseScheduler, with and without the
scheduler's `clip_sample`, and the clip range read from a scheduler config."""

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, DDPMScheduler

from sds3d.guidance.ddim import ddim_step
from sds3d.guidance.priors.stable_diffusion import clip_sample_range_from_scheduler_config


def _inputs():
    generator = torch.Generator().manual_seed(0)
    x = 2.0 * torch.randn(2, 3, 8, 8, generator=generator)  # large enough that x0_hat leaves [-1, 1]
    eps = torch.randn(2, 3, 8, 8, generator=generator)
    return x, eps


@pytest.mark.parametrize("clip", [True, False])
def test_ddim_step_matches_diffusers_denoising(clip):
    ddim = DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=clip, set_alpha_to_one=False)
    ddim.set_timesteps(10)  # 900 -> 800
    x, eps = _inputs()
    expected = ddim.step(eps, 900, x).prev_sample
    abar = ddim.alphas_cumprod
    ours = ddim_step(x, eps, abar[900], abar[800], 1.0 if clip else None)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    if clip:  # the clip matters for these inputs
        assert (ddim_step(x, eps, abar[900], abar[800]) - expected).abs().max() > 0.1


@pytest.mark.parametrize("clip", [True, False])
def test_ddim_step_matches_diffusers_inversion(clip):
    inverse = DDIMInverseScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=clip, set_alpha_to_one=False)
    inverse.set_timesteps(10)  # step(t) moves t - 100 -> t
    x, eps = _inputs()
    expected = inverse.step(eps, 500, x).prev_sample
    abar = inverse.alphas_cumprod
    torch.testing.assert_close(ddim_step(x, eps, abar[400], abar[500], 1.0 if clip else None), expected,
                               rtol=1e-5, atol=1e-5)


def test_clip_range_from_scheduler_config():
    assert clip_sample_range_from_scheduler_config(DDPMScheduler().config) == 1.0  # diffusers' default clips
    assert clip_sample_range_from_scheduler_config(DDPMScheduler(clip_sample_range=2.5).config) == 2.5
    stable_diffusion = {"_class_name": "PNDMScheduler", "beta_schedule": "scaled_linear", "clip_sample": False}
    assert clip_sample_range_from_scheduler_config(stable_diffusion) is None
    assert clip_sample_range_from_scheduler_config({"thresholding": True, "clip_sample": True}) is None
