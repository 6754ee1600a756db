"""CFD (arXiv:2501.05445) and its 3D-consistent noise, on analytic sphere renders."""

import pytest
import torch
from scipy import stats
from tiny_pipelines import build_tiny_sd_pipeline
from toy_priors import GaussianToyPrior, prompt_batch

from sds3d.cameras import CameraSampler, orbit_cameras
from sds3d.guidance.cfd import CFD, CFDConfig, piecewise_linear
from sds3d.guidance.consistent_noise import ConsistentNoise, ConsistentNoiseConfig
from sds3d.guidance.schedules import TimestepConfig
from sds3d.guidance.sds import SDS, SDSConfig
from sds3d.prompts import PromptBatch
from sds3d.types import RenderOutput


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny workloads: one thread is fastest


def sphere_render(cameras, centre=(0.0, 0.0, 0.0), radius=1.0, requires_grad=False):
    """Exact ray-sphere render: alpha in {0, 1}, depth = camera-space z of the first hit, grey rgb."""
    h, w = cameras.height, cameras.width
    v, u = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    rays = torch.einsum("bij,hwj->bhwi", torch.linalg.inv(cameras.Ks), torch.stack([u, v, torch.ones_like(u)], -1))
    c2w = cameras.camtoworlds
    d = torch.einsum("bij,bhwj->bhwi", c2w[:, :3, :3], rays)  # camera z of d is 1
    o = c2w[:, None, None, :3, 3] - torch.tensor(centre)
    a, b, c = (d * d).sum(-1), 2 * (o * d).sum(-1), (o * o).sum(-1) - radius**2
    disc = b * b - 4 * a * c
    z = (-b - disc.clamp_min(0).sqrt()) / (2 * a)
    hit = (disc > 0) & (z > 0)
    rgb = torch.full((len(cameras), h, w, 3), 0.5).requires_grad_(requires_grad)
    return RenderOutput(rgb=rgb, alpha=hit.float()[..., None], depth=torch.where(hit, z, 0.0)[..., None])


def corresponding_pixels(cameras, render, max_offset=0.05, min_facing=0.5):
    """Pixels (row, col) of view 0 and view 1 that see the same sphere point at their centres
    (to within `max_offset` pixels), on surface facing view 0 by at least `min_facing`."""
    h, w = cameras.height, cameras.width
    v, u = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    z, K0, K1 = render.depth[0, ..., 0], cameras.Ks[0], cameras.Ks[1]
    cam0 = torch.stack([(u - K0[0, 2]) / K0[0, 0] * z, (v - K0[1, 2]) / K0[1, 1] * z, z], -1)
    world = cam0 @ cameras.camtoworlds[0, :3, :3].T + cameras.camtoworlds[0, :3, 3]
    cam1 = world @ cameras.viewmats[1, :3, :3].T + cameras.viewmats[1, :3, 3]
    u1 = K1[0, 0] * cam1[..., 0] / cam1[..., 2] + K1[0, 2]
    v1 = K1[1, 1] * cam1[..., 1] / cam1[..., 2] + K1[1, 2]
    col1, row1 = torch.floor(u1).long().clamp(0, w - 1), torch.floor(v1).long().clamp(0, h - 1)
    facing = (torch.nn.functional.normalize(world, dim=-1)
              * torch.nn.functional.normalize(cameras.centers[0] - world, dim=-1)).sum(-1)
    ok = (render.alpha[0, ..., 0] > 0) & (render.alpha[1, row1, col1, 0] > 0) & (facing > min_facing)
    ok &= ((u1 - col1 - 0.5).abs() < max_offset) & ((v1 - row1 - 0.5).abs() < max_offset)
    return ok.nonzero(), torch.stack([row1, col1], -1)[ok]


# -- the noise: exact N(0, 1) marginals --------------------------------------------------------------

def test_noise_is_standard_normal_per_pixel():
    sampler = CameraSampler(width=32, height=32)
    generator = torch.Generator().manual_seed(0)
    small = ConsistentNoiseConfig(table_log2=16)  # a table per scene; collisions are merged, so still exact
    pooled = []
    for scene in range(10):  # random spheres and views; latent-like (16 x 16) and pixel-like (32 x 32) noise
        cams = sampler.sample(1, generator)
        centre = tuple((torch.rand(3, generator=generator) * 0.6 - 0.3).tolist())
        radius = 0.4 + 0.6 * torch.rand(1, generator=generator).item()
        render = sphere_render(cams, centre, radius)
        size = (16, 16) if scene % 2 else (32, 32)
        noise = ConsistentNoise(small)(render.depth, render.alpha, cams, size, 4, generator)
        pooled.append(noise.flatten())
    values = torch.cat(pooled).numpy()
    assert stats.kstest(values, "norm").pvalue > 0.01

    # one fixed pixel on the surface, over independent noise tables
    cams = orbit_cameras(10.0, 30.0, 2.5, 40.0, 32)
    render = sphere_render(cams)
    draws = torch.stack([ConsistentNoise(small)(render.depth, render.alpha, cams, (32, 32), 4,
                                                torch.Generator().manual_seed(seed)) for seed in range(60)])
    for row, col in [(16, 16), (10, 20), (22, 9)]:
        assert render.alpha[0, row, col, 0] == 1
        assert stats.kstest(draws[:, 0, :, row, col].flatten().numpy(), "norm").pvalue > 0.01


def test_surface_pixels_sum_several_cells_and_background_uses_the_fixed_map():
    cams = orbit_cameras(10.0, 0.0, 2.5, 40.0, 32)
    render = sphere_render(cams)
    noise = ConsistentNoise()
    first = noise(render.depth, render.alpha, cams, (32, 32), 1, torch.Generator().manual_seed(0))
    background = render.alpha[0, ..., 0] == 0
    torch.testing.assert_close(first[0, 0][background], noise.background[0][background], rtol=0, atol=0)
    noise.table = torch.ones_like(noise.table)  # then a pixel's value is sqrt(#cells)
    count = noise(render.depth, render.alpha, cams, (32, 32), 1)[0, 0] ** 2
    surface = render.alpha[0, ..., 0] == 1
    assert count[surface].min() >= 4 and 12 < count[surface].median() < 40


# -- the noise: consistency across views, independence within a view ----------------------------

def test_corresponding_points_share_noise_and_other_pixels_do_not():
    shared, other, first, neighbour = [], [], [], []
    for trial in range(3):
        azimuth = 30.0 * trial
        cams = orbit_cameras(torch.tensor([10.0, 10.0]), torch.tensor([azimuth, azimuth + 2.0]), 2.5, 40.0, 64)
        render = sphere_render(cams)
        noise = ConsistentNoise()(render.depth, render.alpha, cams, (64, 64), 4, torch.Generator().manual_seed(trial))
        pix0, pix1 = corresponding_pixels(cams, render)
        first.append(noise[0][:, pix0[:, 0], pix0[:, 1]].flatten())
        shared.append(noise[1][:, pix1[:, 0], pix1[:, 1]].flatten())
        other.append(noise[1][:, (pix1[:, 0] + 3).clamp(max=63), pix1[:, 1]].flatten())
        surface = render.alpha[0, :, :-1, 0] * render.alpha[0, :, 1:, 0] > 0
        neighbour.append(torch.stack([noise[0, :, :, :-1][:, surface], noise[0, :, :, 1:][:, surface]]).flatten(1))
    first, shared, other = torch.cat(first), torch.cat(shared), torch.cat(other)
    assert first.numel() > 1500
    assert torch.corrcoef(torch.stack([first, shared]))[0, 1] > 0.9
    assert torch.corrcoef(torch.stack([first, other]))[0, 1].abs() < 0.1
    assert torch.corrcoef(torch.cat(neighbour, dim=1))[0, 1].abs() < 0.1  # adjacent pixels of one view


def test_refresh_keeps_the_marginals_and_decorrelates_by_gamma():
    cams = orbit_cameras(10.0, 0.0, 2.5, 40.0, 32)
    render = sphere_render(cams)
    noise = ConsistentNoise(ConsistentNoiseConfig(table_log2=16))
    generator = torch.Generator().manual_seed(0)
    before = noise(render.depth, render.alpha, cams, (32, 32), 4, generator)
    noise.refresh(0.1, generator)
    after = noise(render.depth, render.alpha, cams, (32, 32), 4, generator)
    assert torch.corrcoef(torch.stack([before.flatten(), after.flatten()]))[0, 1] == pytest.approx(0.9**0.5, abs=0.03)
    noise.refresh(0.1, generator)  # rows are refreshed when read: two missed refreshes compose
    noise.refresh(0.1, generator)
    later = noise(render.depth, render.alpha, cams, (32, 32), 4, generator)
    assert torch.corrcoef(torch.stack([after.flatten(), later.flatten()]))[0, 1] == pytest.approx(0.9, abs=0.03)
    assert later.std().item() == pytest.approx(1.0, abs=0.03)
    assert noise.table.std().item() == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ValueError, match="gamma"):
        noise.refresh(1.0)


# -- the guidance -----------------------------------------------------------------------------------

def test_sqrt_beta_zero_is_sds_with_sigma_over_alpha_weighting():
    prior = GaussianToyPrior({"obj": 0.7, "": 0.1}, resolution=16)
    cfd = CFD(prior, CFDConfig(sqrt_beta=0.0, guidance_scale=3.0))
    sds = SDS(prior, SDSConfig(guidance_scale=3.0, weighting="uniform"))
    cams = orbit_cameras(torch.tensor([0.0, 20.0]), torch.tensor([0.0, 90.0]), 2.5, 40.0, 16)
    y = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    noise = cfd.sample_noise(sphere_render(cams), cams, y.shape, torch.Generator().manual_seed(2))
    torch.testing.assert_close(noise, torch.randn(y.shape, generator=torch.Generator().manual_seed(2)), rtol=0, atol=0)
    t, p = torch.tensor([300, 800]), prompt_batch(prior, 2)
    alpha, sigma = prior.alpha_sigma(t)
    expected = sigma / alpha * sds.gradient(y, t, noise, p.cond, p.uncond, 0)
    torch.testing.assert_close(cfd.gradient(y, t, noise, p.cond, p.uncond, 0), expected, rtol=0, atol=0)

    # the whole call: same t (SDS with a fixed t) and the same generator draw give the same render gradient
    percent = cfd.timestep(0) / 1000 + 1e-6
    fixed = SDS(prior, SDSConfig(guidance_scale=3.0, weighting="uniform",
                                 timesteps=TimestepConfig(kind="linear_anneal", min_step_percent=percent,
                                                          max_step_percent=percent)))
    grads = []
    for guidance in (cfd, fixed):
        render = sphere_render(cams, requires_grad=True)
        guidance(render, p, cams, 0, torch.Generator().manual_seed(3)).loss.backward()
        grads.append(render.rgb.grad)
    alpha, sigma = prior.alpha_sigma(torch.tensor([cfd.timestep(0)]))
    torch.testing.assert_close(grads[0], (sigma / alpha).item() * grads[1], rtol=1e-6, atol=0)


def test_fixed_geometry_and_t_without_refresh_is_deterministic():
    prior = GaussianToyPrior({"obj": 0.7, "": 0.1}, resolution=16)
    cfd = CFD(prior, CFDConfig(refresh_gamma=(0.0, 0.0, 0.0, 1.0)), total_steps=100)
    cams = orbit_cameras(torch.tensor([10.0]), torch.tensor([45.0]), 2.5, 40.0, 16)
    grads = []
    for seed in range(3):  # different generators: nothing random is drawn
        render = sphere_render(cams, requires_grad=True)
        out = cfd(render, prompt_batch(prior), cams, 7, torch.Generator().manual_seed(0 if seed == 0 else 100 + seed))
        out.loss.backward()
        grads.append(render.rgb.grad)
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])
    assert grads[0].abs().sum() > 0


def test_timestep_follows_the_piecewise_linear_anneal():
    prior = GaussianToyPrior({"obj": 0.5})
    cfd = CFD(prior, total_steps=25000)
    assert [cfd.timestep(s) for s in (0, 2500, 12500, 25000)] == [
        int((0.98 - 0.96 * p) * 1000) for p in (0.0, 0.3, 0.6, 0.8)]
    ts = [cfd.timestep(s) for s in range(0, 25001, 500)]
    assert all(a >= b for a, b in zip(ts, ts[1:]))
    assert piecewise_linear(5.0, (0.0, 10.0), (1.0, 3.0)) == 2.0
    assert piecewise_linear(-1.0, (0.0, 1.0), (4.0, 5.0)) == 4.0
    assert cfd.refresh_gamma(0) == 0.01 and cfd.refresh_gamma(7500) == pytest.approx(0.00505)
    assert cfd.refresh_gamma(20000) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="sqrt_beta"):
        CFD(prior, CFDConfig(sqrt_beta=1.5))


def test_latent_prior_gets_latent_resolution_noise_and_resumes_exactly(tmp_path):
    from sds3d.guidance.priors.stable_diffusion import StableDiffusionPrior

    prior = StableDiffusionPrior.from_pipeline(build_tiny_sd_pipeline(tmp_path / "tok"), device="cpu")
    cams = orbit_cameras(torch.tensor([10.0]), torch.tensor([20.0]), 2.5, 40.0, 16)
    batch = PromptBatch(cond=prior.encode_prompts(["a red cube"]), uncond=prior.encode_prompts([""]),
                        texts=["a red cube"], views=["any"])
    config = CFDConfig(refresh_gamma=(0.0, 0.05, 0.05, 1.0), noise=ConsistentNoiseConfig(table_log2=16))
    first = CFD(prior, config, total_steps=10)
    for step in range(2):
        first(sphere_render(cams), batch, cams, step, torch.Generator().manual_seed(step))
    assert first.noise.table.shape[1] == 4 and first.noise.background.shape == (4, 8, 8)
    second = CFD(prior, config, total_steps=10)
    second.load_state_dict(first.state_dict())
    grads = []
    for cfd in (first, second):
        render = sphere_render(cams, requires_grad=True)
        out = cfd(render, batch, cams, 2, torch.Generator().manual_seed(5))
        out.loss.backward()
        grads.append(render.rgb.grad)
    assert torch.equal(grads[0], grads[1]) and torch.isfinite(grads[0]).all() and grads[0].abs().sum() > 0
    assert torch.equal(first.noise.table, second.noise.table)


def test_cfd_needs_depth_alpha_and_cameras():
    prior = GaussianToyPrior({"obj": 0.5}, resolution=16)
    cams = orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), 2.5, 40.0, 16)
    render = RenderOutput(rgb=torch.rand(1, 16, 16, 3), alpha=None, depth=None)
    with pytest.raises(ValueError, match="depth and alpha"):
        CFD(prior)(render, prompt_batch(prior), cams, 0)
