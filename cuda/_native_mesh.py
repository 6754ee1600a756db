"""Tensor-level call into the native mesh visibility pass (`csrc/mesh_raster.cpp`, a C ABI over raw
pointers, loaded by `build.load_extension`): checks the inputs, allocates the outputs, returns them."""

from __future__ import annotations

import ctypes

import torch

from .build import native_function, pointers

P, I, F, B = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_bool


class MeshKernels:
    def __init__(self, library: ctypes.CDLL):
        self._visibility = native_function(library, "sds3d_mesh_visibility", [P, I, B, P, I, P, P, I, I, I, F, B, P, P])

    def visibility(self, vertices, faces, viewmats, Ks, width, height, near, cull_backfaces):
        """vertices [1 or B, V, 3] float32, faces [F, 3] int64, viewmats [B, 4, 4], Ks [B, 3, 3] ->
        (face_ids [B, H, W] int64 with -1 on background, depth [B, H, W] float32 with 0 there)."""
        if vertices.ndim != 3 or vertices.shape[2] != 3 or vertices.dtype != torch.float32:
            raise ValueError("vertices must be float32 [1 or B, V, 3]")
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype != torch.int64:
            raise ValueError("faces must be int64 [F, 3]")
        if viewmats.ndim != 3 or tuple(viewmats.shape[1:]) != (4, 4):
            raise ValueError("viewmats must be [B, 4, 4]")
        if Ks.ndim != 3 or Ks.shape[0] != viewmats.shape[0] or tuple(Ks.shape[1:]) != (3, 3):
            raise ValueError("Ks must be [B, 3, 3]")
        cameras = viewmats.shape[0]
        if vertices.shape[0] not in (1, cameras):
            raise ValueError("vertices batch must be 1 or B")
        vertices, faces = vertices.contiguous(), faces.contiguous()
        viewmats, Ks = viewmats.float().contiguous(), Ks.float().contiguous()
        face_ids = torch.empty(cameras, height, width, dtype=torch.int64)
        depth = torch.empty(cameras, height, width, dtype=torch.float32)
        self._visibility(*pointers(vertices), vertices.shape[1], vertices.shape[0] == 1, *pointers(faces),
                         faces.shape[0], *pointers(viewmats, Ks), cameras, width, height, near, cull_backfaces,
                         *pointers(face_ids, depth))
        return face_ids, depth
