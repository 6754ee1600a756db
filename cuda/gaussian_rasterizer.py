"""`rasterize_gaussians`: the functional core for 3D Gaussian splatting, with three backends.

- "native": our tile-based C++/OpenMP kernel (`csrc/gaussian_raster.cpp`), for CPU tensors;
- "gsplat": `gsplat.rasterization`, for CUDA tensors (same argument conventions);
- "reference": the dense PyTorch twin (`_torch_gaussians.py`), slow, used as the test oracle and
  as the fallback when the native build fails.

"auto" picks gsplat on CUDA, native on CPU. Conventions as gsplat: `viewmats` world->camera
(OpenCV), `Ks` in pixels, activated `scales` and `opacities`, quaternions (w, x, y, z).
"""

from __future__ import annotations

import functools

import torch
from torch.autograd import Function

from ._native_gaussians import GaussianKernels
from ._torch_gaussians import antialiasing_compensation, rasterize_reference
from .build import load_extension

BACKENDS = ("auto", "native", "reference", "gsplat")
RASTERIZE_MODES = ("classic", "antialiased")


@functools.lru_cache(maxsize=None)
def _native() -> GaussianKernels | None:
    library = load_extension("gaussian_raster")
    return None if library is None else GaussianKernels(library)


class _ProjectGaussians(Function):
    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane, eps2d):
        means2d, conics, depths, radii = _native().project_forward(
            means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane, eps2d)
        ctx.save_for_backward(means, quats, scales, viewmats, Ks, conics, radii)
        ctx.size = (width, height)
        ctx.mark_non_differentiable(radii)
        return means2d, conics, depths, radii

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, _v_radii):
        means, quats, scales, viewmats, Ks, conics, radii = ctx.saved_tensors
        v_means, v_quats, v_scales = _native().project_backward(
            means, quats, scales, viewmats, Ks, *ctx.size, conics, radii,
            v_means2d.contiguous(), v_conics.contiguous(), v_depths.contiguous())
        return v_means, v_quats, v_scales, None, None, None, None, None, None, None, None


class _RasterizeTiles(Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, radii, tile_offsets, flat_ids, width, height, tile_size):
        render, alphas, last_ids = _native().rasterize_forward(
            means2d, conics, colors, opacities, radii, tile_offsets, flat_ids, width, height, tile_size)
        ctx.save_for_backward(means2d, conics, colors, opacities, radii, tile_offsets, flat_ids, alphas, last_ids)
        ctx.size = (width, height, tile_size)
        return render, alphas

    @staticmethod
    def backward(ctx, v_render, v_alphas):
        means2d, conics, colors, opacities, radii, tile_offsets, flat_ids, alphas, last_ids = ctx.saved_tensors
        v_means2d, v_conics, v_colors, v_opacities = _native().rasterize_backward(
            means2d, conics, colors, opacities, radii, tile_offsets, flat_ids, alphas, last_ids,
            v_render.contiguous(), v_alphas.contiguous(), *ctx.size)
        return v_means2d, v_conics, v_colors, v_opacities, None, None, None, None, None, None


def _rasterize_native(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane,
                      far_plane, eps2d, rasterize_mode, tile_size):
    f32 = lambda t: t.float().contiguous()  # noqa: E731
    means2d, conics, depths, radii = _ProjectGaussians.apply(
        f32(means), f32(quats), f32(scales), f32(opacities), f32(viewmats), f32(Ks), width, height,
        near_plane, far_plane, eps2d)
    with torch.no_grad():
        tile_offsets, flat_ids = _native().bin_tiles(means2d, radii, depths, width, height, tile_size)
    view_opacities = f32(opacities).expand(viewmats.shape[0], -1)  # [C, N]; autograd sums the views
    if rasterize_mode == "antialiased":
        view_opacities = view_opacities * antialiasing_compensation(conics, eps2d)
    render, alphas = _RasterizeTiles.apply(means2d, conics, f32(colors), view_opacities.contiguous(), radii,
                                           tile_offsets, flat_ids, width, height, tile_size)
    return render, alphas, (means2d, conics, depths, radii)


def _rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane,
                      far_plane, eps2d, rasterize_mode, tile_size, render_mode):
    from gsplat import rasterization

    render, alphas, info = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                         near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
                                         tile_size=tile_size, packed=False, render_mode=render_mode,
                                         rasterize_mode=rasterize_mode)
    return render, alphas, (info["means2d"], info["conics"], info["depths"], info["radii"])


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasterizer backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "gsplat" if device.type == "cuda" else "native"
    if backend == "native":
        if device.type != "cpu":
            raise ValueError("the native Gaussian rasterizer runs on CPU tensors; use backend='gsplat' on CUDA")
        if _native() is None:  # load_extension has already warned once
            backend = "reference"
    return backend


def rasterize_gaussians(means, quats, scales, opacities, colors, viewmats, Ks, width: int, height: int,
                        near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = 0.3,
                        backgrounds: torch.Tensor | None = None, render_mode: str = "RGB+ED",
                        rasterize_mode: str = "classic", tile_size: int = 16, backend: str = "auto"):
    """Render N Gaussians into C cameras.

    means [N, 3], quats [N, 4] (w, x, y, z, any norm), scales [N, 3] > 0, opacities [N] in (0, 1),
    colors [N, D] or [C, N, D] (any D: RGB plus extra feature channels), viewmats [C, 4, 4],
    Ks [C, 3, 3]. Returns (render [C, H, W, D (+1 for "RGB+ED")], alphas [C, H, W, 1], meta).

    "RGB+ED" appends the expected depth sum(w z) / sum(w) (0 where nothing is hit). `rasterize_mode`
    as gsplat's: "classic" (3DGS) or "antialiased" (Mip-Splatting: each splat's opacity is scaled by
    `antialiasing_compensation`, so the eps2d dilation no longer widens surfaces). `backgrounds`
    [C, D] are composited behind the colours. `meta` holds `means2d` [C, N, 2] (an intermediate
    tensor: call `retain_grad()` on it for densification), `radii` [C, N, 2], `depths`, `conics`,
    `width`, `height`, `n_cameras`, `gaussian_ids` (None: not packed), `backend` - the keys
    gsplat.strategy.DefaultStrategy reads.
    """
    if render_mode not in ("RGB", "RGB+ED"):
        raise ValueError(f"render_mode must be 'RGB' or 'RGB+ED', got {render_mode!r}")
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"rasterize_mode must be one of {', '.join(RASTERIZE_MODES)}, got {rasterize_mode!r}")
    N, C = means.shape[0], viewmats.shape[0]
    if colors.dim() == 2:
        colors = colors.expand(C, *colors.shape)
    if colors.shape[:2] != (C, N):
        raise ValueError(f"colors must be [N, D] or [C, N, D] with N={N}, C={C}; got {tuple(colors.shape)}")
    backend = resolve_backend(backend, means.device)
    channels = colors.shape[-1]
    if backend == "gsplat":
        render, alphas, (means2d, conics, depths, radii) = _rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane,
            eps2d, rasterize_mode, tile_size, render_mode)
    else:
        if render_mode == "RGB+ED":  # depth is one more colour channel, normalised by alpha below
            colors = torch.cat([colors, _camera_depths(means, viewmats)[..., None].to(colors.dtype)], dim=-1)
        rasterize = _rasterize_native if backend == "native" else rasterize_reference
        render, alphas, (means2d, conics, depths, radii) = rasterize(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane, eps2d,
            rasterize_mode, *((tile_size,) if backend == "native" else ()))
        if render_mode == "RGB+ED":
            depth = render[..., channels:] / alphas.clamp_min(1e-10)
            render = torch.cat([render[..., :channels], torch.where(alphas > 0, depth, 0.0)], dim=-1)
    if backgrounds is not None:
        bg = backgrounds.reshape(C, 1, 1, -1)
        render = torch.cat([render[..., :channels] + (1 - alphas) * bg, render[..., channels:]], dim=-1)
    meta = {"means2d": means2d, "radii": radii, "depths": depths, "conics": conics, "width": width,
            "height": height, "n_cameras": C, "tile_size": tile_size, "backend": backend, "gaussian_ids": None}
    return render, alphas, meta


def _camera_depths(means: torch.Tensor, viewmats: torch.Tensor) -> torch.Tensor:
    """[N, 3] world points -> [C, N] camera-space z."""
    return (means @ viewmats[:, 2, :3].T + viewmats[:, 2, 3]).T
