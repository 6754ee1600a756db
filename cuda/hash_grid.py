"""Multiresolution hash encoding (Instant-NGP, Müller et al. 2022) with three backends.

- "native": our C++/OpenMP kernel (`csrc/hash_grid.cpp`), float32 CPU tensors;
- "reference": the PyTorch twin (`_torch_hash_grid.py`), any dtype and device; the test oracle and
  the fallback when the native build fails;
- "cuda": the CUDA twin (`csrc/hash_grid.cu`), built on first use. It compiles with nvcc here but
  has never run (no GPU), so "auto" never picks it: "auto" is native for float32 CPU tensors and
  the reference otherwise.

Level l has resolution floor(base_resolution * per_level_scale^l) cells per axis over [0, 1]^3.
Levels whose (R + 1)^3 grid vertices fit in 2^log2_table_size rows are indexed densely; finer levels
use the spatial hash with primes (1, 2654435761, 805459861). All levels live in one packed table
[P, F]; encodings are [N, L * F], level-major.

Gradients: w.r.t. the tables and the points (first order) on every backend.
`hash_grid_points_vjp` gives d(features . g)/d(points) as its own differentiable op (w.r.t. `g` and
the tables), which is what normals from a density gradient need when a loss is put on them. The
native op does not provide second derivatives w.r.t. the points (it raises if they are needed);
the reference does.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from . import _torch_hash_grid
from ._native_hash_grid import HashGridKernels
from .build import CSRC, _build_dir, load_extension

BACKENDS = ("auto", "native", "reference", "cuda")
_OPS = ("forward", "backward_tables", "points_vjp", "points_vjp_backward")


@dataclass(frozen=True)
class HashGridLayout:
    """Per-level resolution, row offsets into the packed table ([L + 1]) and hashed/dense flag."""

    resolutions: tuple[int, ...]
    offsets: tuple[int, ...]
    hashed: tuple[bool, ...]

    @classmethod
    def make(cls, levels: int = 16, log2_table_size: int = 19, base_resolution: int = 16,
             per_level_scale: float | None = None, max_resolution: int | None = 2048) -> "HashGridLayout":
        """`per_level_scale` wins over `max_resolution` (which sets it to (max / base)^(1 / (L - 1)))."""
        if levels < 1 or not 1 <= log2_table_size <= 31 or base_resolution < 1:
            raise ValueError("need levels >= 1, 1 <= log2_table_size <= 31, base_resolution >= 1")
        if per_level_scale is None:
            if max_resolution is None:
                raise ValueError("give per_level_scale or max_resolution")
            per_level_scale = math.exp(math.log(max_resolution / base_resolution) / max(levels - 1, 1))
        table_size = 2 ** log2_table_size
        resolutions, offsets, hashed = [], [0], []
        for level in range(levels):
            resolution = max(1, int(math.floor(base_resolution * per_level_scale ** level + 1e-6)))
            dense_rows = (resolution + 1) ** 3
            resolutions.append(resolution)
            hashed.append(dense_rows > table_size)
            offsets.append(offsets[-1] + (table_size if hashed[-1] else dense_rows))
        return cls(tuple(resolutions), tuple(offsets), tuple(hashed))

    @property
    def levels(self) -> int:
        return len(self.resolutions)

    @property
    def num_rows(self) -> int:
        return self.offsets[-1]

    @property
    def args(self) -> tuple[list[int], list[int], list[int]]:
        """(resolutions, offsets, hashed) as the kernels take them."""
        return list(self.resolutions), list(self.offsets), [int(h) for h in self.hashed]


@functools.lru_cache(maxsize=None)
def _native() -> HashGridKernels | None:
    library = load_extension("hash_grid")
    return None if library is None else HashGridKernels(library)


@functools.lru_cache(maxsize=None)
def _cuda_extension():
    from torch.utils.cpp_extension import load

    build_dir = _build_dir() / "hash_grid_cuda"
    build_dir.mkdir(parents=True, exist_ok=True)
    return load(name="sds3d_hash_grid_cuda", sources=[str(CSRC / "hash_grid.cu")], extra_include_paths=[str(CSRC)],
                extra_cuda_cflags=["-O3"], build_directory=str(build_dir), verbose=False)


def _kernels(device: torch.device):
    """The four ops for tensors on `device` (the CUDA ones bound to the current stream)."""
    if device.type == "cpu":
        return _native()
    ext, stream = _cuda_extension(), torch.cuda.current_stream(device).cuda_stream
    return SimpleNamespace(**{name: functools.partial(getattr(ext, name), stream) for name in _OPS})


class _Encode(Function):
    @staticmethod
    def forward(ctx, points, tables, layout):
        ctx.save_for_backward(points, tables)
        ctx.layout = layout
        return _kernels(points.device).forward(points, tables, *layout.args)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        points, tables = ctx.saved_tensors
        ops, args, grad = _kernels(points.device), ctx.layout.args, grad.contiguous()
        grad_points = ops.points_vjp(grad, points, tables, *args) if ctx.needs_input_grad[0] else None
        grad_tables = ops.backward_tables(grad, points, tables, *args) if ctx.needs_input_grad[1] else None
        return grad_points, grad_tables, None


class _PointsVJP(Function):
    @staticmethod
    def forward(ctx, grad_features, points, tables, layout):
        ctx.save_for_backward(grad_features, points, tables)
        ctx.layout = layout
        return _kernels(points.device).points_vjp(grad_features, points, tables, *layout.args)

    @staticmethod
    @once_differentiable
    def backward(ctx, v):
        if ctx.needs_input_grad[1]:
            raise RuntimeError("the native hash-grid kernel has no second derivatives w.r.t. the points; "
                               "detach the points or use backend='reference'")
        grad_features, points, tables = ctx.saved_tensors
        need_features, need_tables = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
        gg, gt = _kernels(points.device).points_vjp_backward(v.contiguous(), grad_features, points, tables,
                                                             *ctx.layout.args, need_features, need_tables)
        return (gg if need_features else None), None, (gt if need_tables else None), None


def resolve_backend(backend: str, points: torch.Tensor, tables: torch.Tensor) -> str:
    """"auto" -> "native" for float32 CPU tensors (when it builds), else "reference"."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown hash-grid backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    float32 = points.dtype == torch.float32 and tables.dtype == torch.float32
    if backend == "auto":
        backend = "native" if points.device.type == "cpu" and float32 else "reference"
    if backend in ("native", "cuda"):
        wanted = "cpu" if backend == "native" else "cuda"
        if points.device.type != wanted or tables.device.type != wanted or not float32:
            raise ValueError(f"the {backend} hash-grid kernel takes float32 {wanted} tensors; use backend='reference'")
        if backend == "native" and _native() is None:  # load_extension has already warned once
            backend = "reference"
    return backend


def _check(points: torch.Tensor, tables: torch.Tensor, layout: HashGridLayout) -> None:
    if points.shape[-1] != 3:
        raise ValueError(f"points must be [..., 3], got {tuple(points.shape)}")
    if tables.dim() != 2 or tables.shape[0] != layout.num_rows:
        raise ValueError(f"tables must be [{layout.num_rows}, F] for this layout, got {tuple(tables.shape)}")


def hash_grid_encode(points: torch.Tensor, tables: torch.Tensor, layout: HashGridLayout,
                     backend: str = "auto") -> torch.Tensor:
    """points [..., 3] in [0, 1]^3 (clamped), tables [P, F] -> features [..., L * F]."""
    _check(points, tables, layout)
    flat = points.reshape(-1, 3)
    backend = resolve_backend(backend, flat, tables)
    if backend == "reference":
        out = _torch_hash_grid.encode(flat, tables, *layout.args)
    else:
        out = _Encode.apply(flat.contiguous(), tables.contiguous(), layout)
    return out.reshape(*points.shape[:-1], out.shape[-1])


def hash_grid_points_vjp(grad_features: torch.Tensor, points: torch.Tensor, tables: torch.Tensor,
                         layout: HashGridLayout, backend: str = "auto") -> torch.Tensor:
    """sum_j grad_features[..., j] * d features[..., j] / d points -> [..., 3]. grad_features
    [..., L * F]. Differentiable w.r.t. grad_features and tables (and points on the reference)."""
    _check(points, tables, layout)
    flat, g = points.reshape(-1, 3), grad_features.reshape(-1, grad_features.shape[-1])
    backend = resolve_backend(backend, flat, tables)
    if backend == "reference":
        out = _torch_hash_grid.points_vjp(g, flat, tables, *layout.args)
    else:
        out = _PointsVJP.apply(g.float().contiguous(), flat.contiguous(), tables.contiguous(), layout)
    return out.reshape(points.shape)


class HashGridEncoding(nn.Module):
    """Learnable multiresolution hash encoding: points [..., 3] in [0, 1]^3 -> [..., L * F].

    The table is one parameter `tables` [P, F], initialised uniformly in [-init_scale, init_scale]
    (Instant-NGP uses 1e-4)."""

    def __init__(self, levels: int = 16, features_per_level: int = 2, log2_table_size: int = 19,
                 base_resolution: int = 16, per_level_scale: float | None = None, max_resolution: int | None = 2048,
                 init_scale: float = 1e-4, backend: str = "auto", generator: torch.Generator | None = None):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown hash-grid backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.layout = HashGridLayout.make(levels, log2_table_size, base_resolution, per_level_scale, max_resolution)
        self.features_per_level = features_per_level
        self.backend = backend
        tables = (torch.rand(self.layout.num_rows, features_per_level, generator=generator) * 2 - 1) * init_scale
        self.tables = nn.Parameter(tables)

    @property
    def output_dim(self) -> int:
        return self.layout.levels * self.features_per_level

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return hash_grid_encode(points, self.tables, self.layout, self.backend)

    def points_vjp(self, grad_features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """d(features . grad_features) / d points [..., 3]; see `hash_grid_points_vjp`."""
        return hash_grid_points_vjp(grad_features, points, self.tables, self.layout, self.backend)

    def extra_repr(self) -> str:
        return (f"levels={self.layout.levels}, features_per_level={self.features_per_level}, "
                f"resolutions={self.layout.resolutions[0]}..{self.layout.resolutions[-1]}, "
                f"dense_levels={self.layout.hashed.count(False)}, rows={self.layout.num_rows}, backend={self.backend}")
