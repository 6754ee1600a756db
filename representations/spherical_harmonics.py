"""Real spherical harmonics up to degree 3, in the 3DGS convention (colour = SH(dir) + 0.5)."""

from __future__ import annotations

import torch

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
      1.445305721320277, -0.5900435899266435)


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Unit directions [..., 3] -> basis values [..., (degree + 1)^2]."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be in 0..3, got {degree}")
    x, y, z = dirs.unbind(-1)
    basis = [torch.full_like(x, C0)]
    if degree >= 1:
        basis += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        basis += [C2[0] * x * y, C2[1] * y * z, C2[2] * (2 * zz - xx - yy), C2[3] * x * z, C2[4] * (xx - yy)]
    if degree >= 3:
        basis += [C3[0] * y * (3 * xx - yy), C3[1] * x * y * z, C3[2] * y * (4 * zz - xx - yy),
                  C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[4] * x * (4 * zz - xx - yy), C3[5] * z * (xx - yy),
                  C3[6] * x * (xx - 3 * yy)]
    return torch.stack(basis, dim=-1)


def evaluate_sh(degree: int, coeffs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """coeffs [..., K, 3] with K >= (degree + 1)^2, dirs [..., 3] (any length) -> [..., 3]
    (without the +0.5 offset)."""
    n = (degree + 1) ** 2
    basis = sh_basis(degree, torch.nn.functional.normalize(dirs, dim=-1))
    return (basis[..., None] * coeffs[..., :n, :]).sum(-2)


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """Colour in [0, 1] -> the DC coefficient that reproduces it."""
    return (rgb - 0.5) / C0
