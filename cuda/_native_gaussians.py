"""Tensor-level calls into the native Gaussian rasterizer (`csrc/gaussian_raster.cpp`, a C ABI over raw
pointers, loaded by `build.load_extension`): each method checks its inputs, allocates the outputs and
returns them. Shapes as in the C++ comments; C cameras, N Gaussians, D colour channels."""

from __future__ import annotations

import ctypes

import torch

from .build import native_function, pointers

P, I, F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double


class GaussianKernels:
    def __init__(self, library: ctypes.CDLL):
        self._project_forward = native_function(library, "sds3d_project_forward", [P] * 6 + [I] * 4 + [F] * 3 + [P] * 4)
        self._project_backward = native_function(library, "sds3d_project_backward", [P] * 5 + [I] * 4 + [P] * 8)
        self._bin_tiles = native_function(library, "sds3d_bin_tiles", [P] * 3 + [I] * 5 + [P], restype=P)
        self._take_tile_lists = native_function(library, "sds3d_take_tile_lists", [P, P])
        self._rasterize_forward = native_function(library, "sds3d_rasterize_forward", [P] * 7 + [I] * 6 + [P] * 3)
        self._rasterize_backward = native_function(library, "sds3d_rasterize_backward", [P] * 11 + [I] * 6 + [P])
        self._max_threads = native_function(library, "sds3d_max_threads", [], restype=I)

    def project_forward(self, means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane,
                        eps2d):
        """-> means2d [C, N, 2], conics [C, N, 3], depths [C, N], radii [C, N, 2] int32."""
        N, C = means.shape[0], viewmats.shape[0]
        means2d, conics, depths = means.new_zeros(C, N, 2), means.new_zeros(C, N, 3), means.new_zeros(C, N)
        radii = torch.zeros(C, N, 2, dtype=torch.int32)
        self._project_forward(*pointers(means, quats, scales, opacities, viewmats, Ks), N, C, width, height,
                              near_plane, far_plane, eps2d, *pointers(means2d, conics, depths, radii))
        return means2d, conics, depths, radii

    def project_backward(self, means, quats, scales, viewmats, Ks, width, height, conics, radii, v_means2d, v_conics,
                         v_depths):
        """-> v_means [N, 3], v_quats [N, 4], v_scales [N, 3]."""
        N, C = means.shape[0], viewmats.shape[0]
        v_means, v_quats, v_scales = torch.zeros_like(means), torch.zeros_like(quats), torch.zeros_like(scales)
        self._project_backward(*pointers(means, quats, scales, viewmats, Ks), N, C, width, height,
                               *pointers(conics, radii, v_means2d, v_conics, v_depths, v_means, v_quats, v_scales))
        return v_means, v_quats, v_scales

    def bin_tiles(self, means2d, radii, depths, width, height, tile_size):
        """-> tile_offsets [C, T + 1] int64 (into flat_ids), flat_ids [total] int32: per camera and tile,
        the Gaussians its box touches, nearest first."""
        C, N = means2d.shape[:2]
        tiles = -(-width // tile_size) * -(-height // tile_size)
        tile_offsets = torch.zeros(C, tiles + 1, dtype=torch.int64)
        handle = self._bin_tiles(*pointers(means2d, radii, depths), C, N, width, height, tile_size,
                                 *pointers(tile_offsets))
        flat_ids = torch.empty(int(tile_offsets[-1, -1]) if C else 0, dtype=torch.int32)
        self._take_tile_lists(handle, *pointers(flat_ids))  # copies and frees the lists
        return tile_offsets, flat_ids

    def rasterize_forward(self, means2d, conics, colors, opacities, radii, tile_offsets, flat_ids, width, height,
                          tile_size):
        """-> render [C, H, W, D], alphas [C, H, W, 1], last_ids [C, H, W] int64."""
        (C, N), D = means2d.shape[:2], colors.shape[2]
        render, alphas = means2d.new_zeros(C, height, width, D), means2d.new_zeros(C, height, width, 1)
        last_ids = torch.zeros(C, height, width, dtype=torch.int64)
        self._rasterize_forward(*pointers(means2d, conics, colors, opacities, radii, tile_offsets, flat_ids), C, N, D,
                                width, height, tile_size, *pointers(render, alphas, last_ids))
        return render, alphas, last_ids

    def rasterize_backward(self, means2d, conics, colors, opacities, radii, tile_offsets, flat_ids, alphas, last_ids,
                           v_render, v_alphas, width, height, tile_size):
        """-> v_means2d [C, N, 2], v_conics [C, N, 3], v_colors [C, N, D], v_opacities [C, N]."""
        (C, N), D = means2d.shape[:2], colors.shape[2]
        buffers = means2d.new_zeros(self._max_threads(), C, N, 6 + D)  # one per thread: reproducible sums
        self._rasterize_backward(*pointers(means2d, conics, colors, opacities, radii, tile_offsets, flat_ids, alphas,
                                           last_ids, v_render, v_alphas), C, N, D, width, height, tile_size,
                                 *pointers(buffers))
        total = buffers.sum(0)
        return (total[..., 0:2].contiguous(), total[..., 2:5].contiguous(), total[..., 6:].contiguous(),
                total[..., 5].contiguous())
