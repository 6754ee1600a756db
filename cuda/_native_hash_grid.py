"""Tensor-level calls into the native hash-grid encoder (`csrc/hash_grid.cpp`, a C ABI over raw pointers,
loaded by `build.load_extension`): each method checks the layout and tensors, allocates the outputs and
returns them. points [N, 3], tables [P, F] float32; the layout is (resolutions [L], offsets [L + 1],
hashed [L]) as `HashGridLayout.args` gives it."""

from __future__ import annotations

import ctypes

import torch

from .build import native_function, pointers

P, I = ctypes.c_void_p, ctypes.c_int64
MAX_FEATURES = 32  # features per level the kernels accumulate on the stack
LAYOUT = [P, P, P, I]


def _layout(tables: torch.Tensor, resolutions, offsets, hashed) -> list:
    """The layout as int64 tensors (kept alive by the caller) and L, after checking it fits `tables`."""
    L = len(resolutions)
    if not 1 <= tables.shape[1] <= MAX_FEATURES:
        raise ValueError(f"hash grid: 1 to {MAX_FEATURES} features per level")
    if L == 0 or len(offsets) != L + 1 or len(hashed) != L:
        raise ValueError("hash grid layout: need L resolutions, L + 1 offsets, L flags")
    if offsets[0] != 0 or offsets[L] != tables.shape[0]:
        raise ValueError("hash grid layout: offsets must span the table rows")
    for resolution, start, end, is_hashed in zip(resolutions, offsets, offsets[1:], hashed):
        size = end - start
        if resolution < 1:
            raise ValueError("hash grid layout: resolutions must be >= 1")
        if is_hashed and not (0 < size <= 2 ** 31 and size & (size - 1) == 0):
            raise ValueError("hashed levels need a power-of-two table size up to 2^31")
        if not is_hashed and size != (resolution + 1) ** 3:
            raise ValueError("dense levels need (resolution + 1)^3 rows")
    return [torch.tensor(list(values), dtype=torch.int64) for values in (resolutions, offsets, hashed)] + [L]


def _check(tensor: torch.Tensor, name: str, rows: int | None, width: int | None) -> None:
    if tensor.dtype != torch.float32 or tensor.device.type != "cpu" or not tensor.is_contiguous():
        raise ValueError(f"{name} must be a contiguous float32 CPU tensor")
    if tensor.ndim != 2 or (rows is not None and tensor.shape[0] != rows) or (
            width is not None and tensor.shape[1] != width):
        raise ValueError(f"{name} has the wrong shape")


class HashGridKernels:
    def __init__(self, library: ctypes.CDLL):
        self._forward = native_function(library, "sds3d_hash_grid_forward", [P, I, P, I, *LAYOUT, P])
        self._backward_tables = native_function(library, "sds3d_hash_grid_backward_tables", [P, P, I, I, *LAYOUT, P])
        self._points_vjp = native_function(library, "sds3d_hash_grid_points_vjp", [P, P, I, P, I, *LAYOUT, P])
        self._points_vjp_backward = native_function(library, "sds3d_hash_grid_points_vjp_backward",
                                                    [P, P, P, I, P, I, *LAYOUT, P, P])

    @staticmethod
    def _inputs(points, tables, resolutions, offsets, hashed):
        _check(points, "points", None, 3)
        _check(tables, "tables", None, None)
        layout = _layout(tables, resolutions, offsets, hashed)
        return points.shape[0], tables.shape[1], layout

    def forward(self, points, tables, resolutions, offsets, hashed):
        """-> encoding [N, L * F]."""
        N, F, layout = self._inputs(points, tables, resolutions, offsets, hashed)
        out = points.new_empty(N, layout[-1] * F)
        self._forward(*pointers(points), N, *pointers(tables), F, *pointers(*layout[:3]), layout[3], *pointers(out))
        return out

    def backward_tables(self, grad_out, points, tables, resolutions, offsets, hashed):
        """d(loss)/d(tables) [P, F] from d(loss)/d(encoding) grad_out [N, L * F]."""
        N, F, layout = self._inputs(points, tables, resolutions, offsets, hashed)
        _check(grad_out, "grad_out", N, layout[-1] * F)
        grad_tables = torch.zeros_like(tables)
        self._backward_tables(*pointers(grad_out, points), N, F, *pointers(*layout[:3]), layout[3],
                              *pointers(grad_tables))
        return grad_tables

    def points_vjp(self, grad_out, points, tables, resolutions, offsets, hashed):
        """sum over (l, f) of grad_out[n, l F + f] d(encoding[n, l F + f]) / d(points[n]) -> [N, 3]."""
        N, F, layout = self._inputs(points, tables, resolutions, offsets, hashed)
        _check(grad_out, "grad_out", N, layout[-1] * F)
        grad_points = torch.zeros_like(points)
        self._points_vjp(*pointers(grad_out, points), N, *pointers(tables), F, *pointers(*layout[:3]), layout[3],
                         *pointers(grad_points))
        return grad_points

    def points_vjp_backward(self, v, grad_out, points, tables, resolutions, offsets, hashed, need_grad_out,
                            need_tables):
        """Backward of points_vjp for v [N, 3] -> (d/d grad_out [N, L * F], d/d tables [P, F]), None
        where not requested."""
        N, F, layout = self._inputs(points, tables, resolutions, offsets, hashed)
        _check(v, "v", N, 3)
        _check(grad_out, "grad_out", N, layout[-1] * F)
        gg = points.new_empty(N, layout[-1] * F) if need_grad_out else None
        gt = torch.zeros_like(tables) if need_tables else None
        self._points_vjp_backward(*pointers(v, grad_out, points), N, *pointers(tables), F, *pointers(*layout[:3]),
                                  layout[3], gg.data_ptr() if gg is not None else None,
                                  gt.data_ptr() if gt is not None else None)
        return gg, gt
