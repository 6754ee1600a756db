"""Exact analytic renders of a sphere and the pixel correspondences between two of its views, for
tests of 3D-consistent noise (CFD)."""

import torch

from sds3d.types import RenderOutput


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
