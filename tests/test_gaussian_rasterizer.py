"""Native tile rasterizer vs the dense PyTorch reference (forward and gradients), gsplat's own
PyTorch projection as a second oracle, and analytic single-Gaussian checks."""

import math
import warnings

import pytest
import torch

import sds3d.cuda.gaussian_rasterizer as gr
from sds3d.cameras import orbit_cameras
from sds3d.cuda.build import load_extension
from sds3d.cuda.gaussian_rasterizer import rasterize_gaussians

SIZE = 32


def make_scene(kind: str, seed: int = 0, n: int = 250, channels: int = 3):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.45
    scales = torch.rand(n, 3, generator=g) * 0.12 + 0.01
    cams = orbit_cameras([15.0, 40.0, -20.0], [0.0, 100.0, -150.0], [2.5, 2.0, 3.0], 40.0, SIZE)
    if kind == "behind_camera":
        # a third of the Gaussians around and behind the first camera (at +x, 2.5 from the origin)
        means[: n // 3] = torch.tensor([2.5, 0.0, 0.0]) + torch.randn(n // 3, 3, generator=g) * 0.4
    elif kind == "off_screen":
        means = torch.randn(n, 3, generator=g) * 1.2  # many project outside the 32x32 image
    elif kind == "huge_and_tiny":
        scales[: n // 4] = 1e-4
        scales[n // 4: n // 2] = torch.rand(n // 2 - n // 4, 3, generator=g) * 1.5 + 0.5
    elif kind == "anisotropic":
        scales = torch.rand(n, 3, generator=g) ** 3 * 0.3 + 1e-3
    quats = torch.randn(n, 4, generator=g)
    opacities = torch.rand(n, generator=g) * 0.98 + 0.01
    colors = torch.rand(n, channels, generator=g)
    params = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors)
    return params, cams


def render(params, cams, backend, dtype, weights=None, rasterize_mode="classic"):
    p = {k: v.clone().to(dtype).requires_grad_(True) for k, v in params.items()}
    rgb, alpha, meta = rasterize_gaussians(p["means"], p["quats"], p["scales"], p["opacities"], p["colors"],
                                           cams.viewmats.to(dtype), cams.Ks.to(dtype), SIZE, SIZE, backend=backend,
                                           rasterize_mode=rasterize_mode)
    if weights is not None:
        loss = (rgb * weights[0].to(dtype)).sum() + (alpha * weights[1].to(dtype)).sum()
        loss.backward()
    return rgb.detach(), alpha.detach(), {k: v.grad for k, v in p.items()}, meta


def threshold_ties(meta, opacities, cams) -> torch.Tensor:
    """opacities [C, N] as composited. [C, H, W, 1] pixels where some Gaussian sits within float32
    rounding of a compositing threshold (alpha = 1/255, transmittance = 1e-4): there float32 and
    float64 may legitimately decide differently, so the comparison leaves those pixels out."""
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    pixels = torch.stack([xs, ys], -1).reshape(-1, 2).double()
    ties = []
    for c in range(len(cams)):
        order = torch.argsort(meta["depths"][c].detach(), stable=True)
        m2, con = meta["means2d"][c].detach()[order], meta["conics"][c].detach()[order]
        d = m2[None] - pixels[:, None]
        sigma = 0.5 * (con[:, 0] * d[..., 0] ** 2 + con[:, 2] * d[..., 1] ** 2) + con[:, 1] * d[..., 0] * d[..., 1]
        alpha = (opacities[c].detach().double()[order] * torch.exp(-sigma)).clamp(max=0.99)
        alpha = alpha * (meta["radii"][c][order] > 0).all(-1)
        near_alpha_min = (alpha - 1 / 255).abs() < 1e-6
        trans = torch.cumprod(1 - torch.where(alpha >= 1 / 255, alpha, 0.0), dim=1)
        near_trans_min = ((trans - 1e-4).abs() < 1e-8)
        ties.append((near_alpha_min | near_trans_min).any(1).reshape(SIZE, SIZE, 1))
    return torch.stack(ties)


SCENES = ["random", "behind_camera", "off_screen", "huge_and_tiny", "anisotropic"]


@pytest.mark.parametrize("kind, channels, rasterize_mode",
                         [(kind, channels, "classic") for kind in SCENES for channels in (3, 7)]
                         + [(kind, 3, "antialiased") for kind in SCENES])
def test_native_matches_reference(kind, channels, rasterize_mode):
    params, cams = make_scene(kind, seed=SCENES.index(kind), channels=channels)
    _, _, _, meta = render(params, cams, "reference", torch.float64)
    view_opacities = params["opacities"].double().expand(len(cams), -1)
    if rasterize_mode == "antialiased":
        view_opacities = view_opacities * gr.antialiasing_compensation(meta["conics"].detach(), 0.3)
    ties = threshold_ties(meta, view_opacities, cams)
    assert ties.float().mean() < 0.01
    g = torch.Generator().manual_seed(1)
    weights = (torch.randn(3, SIZE, SIZE, channels + 1, generator=g) * ~ties,
               torch.randn(3, SIZE, SIZE, 1, generator=g) * ~ties)
    rgb_n, alpha_n, grads_n, meta_n = render(params, cams, "native", torch.float32, weights, rasterize_mode)
    rgb_r, alpha_r, grads_r, meta_r = render(params, cams, "reference", torch.float64, weights, rasterize_mode)
    assert meta_n["backend"] == "native"
    assert alpha_r.max() > 0.5, "scene should cover some pixels"
    torch.testing.assert_close(meta_n["radii"], meta_r["radii"], atol=1, rtol=0)
    assert ((rgb_n.double() - rgb_r).abs() * ~ties).max() <= 1e-4
    assert ((alpha_n.double() - alpha_r).abs() * ~ties).max() <= 1e-4
    for name in params:
        ref = grads_r[name]
        err = (grads_n[name].double() - ref).norm() / ref.norm()
        assert ref.norm() > 0, name
        assert err <= 1e-3, f"{name}: relative gradient error {err:.2e}"


def test_projection_matches_gsplat_torch_reference():
    from gsplat.cuda._torch_impl import _persp_proj, _quat_scale_to_covar_preci, _world_to_cam

    params, cams = make_scene("random", seed=5)
    means2d, conics, depths, radii = gr._native().project_forward(
        params["means"], params["quats"], params["scales"], params["opacities"], cams.viewmats, cams.Ks,
        SIZE, SIZE, 0.01, 1e10, 0.3)
    covars, _ = _quat_scale_to_covar_preci(params["quats"], params["scales"], compute_preci=False)
    means_c, covars_c = _world_to_cam(params["means"], covars, cams.viewmats)
    ref_means2d, ref_cov2d = _persp_proj(means_c, covars_c, cams.Ks, SIZE, SIZE)
    ref_conics = torch.linalg.inv(ref_cov2d + 0.3 * torch.eye(2))
    visible = (radii > 0).all(-1)
    assert visible.sum() > 100
    torch.testing.assert_close(means2d[visible], ref_means2d[visible], atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(conics[visible][:, [0, 1, 2]],
                               ref_conics[visible][:, [0, 0, 1], [0, 1, 1]], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(depths, means_c[..., 2])


def test_antialiasing_compensation_matches_gsplat():
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    params, cams = make_scene("anisotropic", seed=6)
    _, _, _, meta = render(params, cams, "reference", torch.float64)
    covars, _ = _quat_scale_to_covar_preci(params["quats"].double(), params["scales"].double(), compute_preci=False)
    *_, compensations = _fully_fused_projection(params["means"].double(), covars, cams.viewmats.double(),
                                                cams.Ks.double(), SIZE, SIZE, eps2d=0.3, calc_compensations=True)
    visible = (meta["radii"] > 0).all(-1)
    assert visible.sum() > 100 and compensations[visible].min() < 0.5  # thin splats are compensated a lot
    torch.testing.assert_close(gr.antialiasing_compensation(meta["conics"].detach(), 0.3)[visible],
                               compensations[visible], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_antialiased_footprint_does_not_depend_on_the_dilation(backend):
    """Mip-Splatting's point: with the compensation, sum(alpha) over the image equals
    opacity * 2 pi sqrt(det cov2d) whatever eps2d is; classic splats grow with eps2d."""
    means, quats, scales, _, cams = single_gaussian(scale=0.05)
    opacity = torch.tensor([0.6])  # alpha stays below its 0.99 clamp; the 1/255 cut loses < 1.5 %

    def footprint(eps2d, mode):
        _, alpha, _ = rasterize_gaussians(means, quats, scales, opacity, torch.ones(1, 3), cams.viewmats, cams.Ks,
                                          SIZE, SIZE, eps2d=eps2d, rasterize_mode=mode, backend=backend)
        return alpha.sum().item()

    sigma_px2 = (cams.Ks[0, 0, 0].item() * 0.05 / 2.0) ** 2
    expected = 0.6 * 2 * math.pi * sigma_px2
    for eps2d in (0.1, 0.3, 1.0):
        assert footprint(eps2d, "antialiased") == pytest.approx(expected, rel=1.5e-2)
    assert footprint(1.0, "classic") > 1.3 * footprint(0.1, "classic")


def single_gaussian(opacity=0.7, z=0.0, scale=0.05):
    means = torch.tensor([[0.0, 0.0, z]])
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    scales = torch.full((1, 3), scale)
    cams = orbit_cameras(0.0, 0.0, 2.0, 40.0, SIZE)
    return means, quats, scales, torch.tensor([opacity]), cams


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_single_gaussian_analytic(backend):
    means, quats, scales, opacities, cams = single_gaussian()
    colors = torch.tensor([[0.2, 0.4, 0.8]])
    rgb, alpha, _ = rasterize_gaussians(means, quats, scales, opacities, colors, cams.viewmats, cams.Ks, SIZE, SIZE,
                                        backend=backend)
    # the mean projects to (16, 16): a pixel corner, so the 4 central pixels see the same weight
    focal = cams.Ks[0, 0, 0].item()
    sigma_px2 = (focal * 0.05 / 2.0) ** 2 + 0.3
    expected = 0.7 * math.exp(-0.5 * 0.5 / sigma_px2)
    assert alpha[0, 15, 15, 0].item() == pytest.approx(expected, rel=1e-4)
    torch.testing.assert_close(rgb[0, 15, 15, :3], colors[0] * expected, atol=1e-5, rtol=1e-4)
    assert rgb[0, 15, 15, 3].item() == pytest.approx(2.0, abs=1e-4)  # expected depth
    assert alpha[0, 0, 0, 0] == 0 and rgb[0, 0, 0, 3] == 0  # nothing hit: depth 0


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_occlusion_front_to_back(backend):
    means = torch.tensor([[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]])  # first is nearer to a camera at +x
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(2, 1)
    scales = torch.full((2, 3), 0.15)
    opacities = torch.tensor([0.99, 0.99])
    colors = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    cams = orbit_cameras(0.0, 0.0, 2.5, 40.0, SIZE)
    rgb, alpha, _ = rasterize_gaussians(means, quats, scales, opacities, colors, cams.viewmats, cams.Ks, SIZE, SIZE,
                                        backgrounds=torch.ones(1, 3), render_mode="RGB", backend=backend)
    centre = rgb[0, 16, 16]
    assert centre[0] > 0.95 and centre[2] < 0.05  # red in front, blue hidden
    assert rgb[0, 0, 0].tolist() == [1.0, 1.0, 1.0]  # white background where nothing is hit


def test_backend_selection_and_errors():
    assert gr.resolve_backend("auto", torch.device("cpu")) == "native"
    with pytest.raises(ValueError, match="unknown rasterizer backend"):
        gr.resolve_backend("optix", torch.device("cpu"))
    means, quats, scales, opacities, cams = single_gaussian()
    with pytest.raises(ValueError, match="colors must be"):
        rasterize_gaussians(means, quats, scales, opacities, torch.ones(2, 3), cams.viewmats, cams.Ks, 8, 8)


def test_fallback_to_reference_when_native_is_unavailable(monkeypatch):
    monkeypatch.setattr(gr, "_native", lambda: None)
    means, quats, scales, opacities, cams = single_gaussian()
    rgb, alpha, meta = rasterize_gaussians(means, quats, scales, opacities, torch.ones(1, 3), cams.viewmats, cams.Ks,
                                           SIZE, SIZE, backend="native")
    assert meta["backend"] == "reference" and alpha.max() > 0.5


def test_failed_build_warns_and_returns_none():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_extension("does_not_exist") is None
    assert any("falling back" in str(w.message) for w in caught)
