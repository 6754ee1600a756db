"""A feature field on a hash-grid NeRF: a small head on the NeRF's own hash-grid encoding (read
detached) gives a d-wide latent per sample, composited with the NeRF's volume-rendering weights
(computed without gradients) and decoded to the teacher's width, as LERF renders its language
field with detached weights.

Reference: LERF: Language Embedded Radiance Fields, arXiv:2303.09553
"""

from __future__ import annotations

import torch

from sds3d.cameras import Cameras
from sds3d.errors import InputError
from sds3d.representations.nerf import MLP, NeRF
from sds3d.representations.volume_rendering import camera_rays, ray_box, render_weights, stratified_samples
from .field_base import FeatureField


class NeRFFeatureField(FeatureField):
    kind = "nerf"

    def __init__(self, nerf: NeRF, dim: int, latent_dim: int, teacher_name: str,
                 generator: torch.Generator | None = None, hidden: int = 64):
        super().__init__(dim, latent_dim, teacher_name)
        self.head = MLP(nerf.encoding.output_dim, hidden, 1, latent_dim, generator)

    def check_fits(self, representation) -> None:
        if not isinstance(representation, NeRF):
            raise InputError(f"a NeRF feature field does not fit a {type(representation).__name__}")
        if representation.encoding.output_dim != self.head.layers[0].in_features:
            raise InputError("the feature field was made for a NeRF with another hash encoding")

    def _encode(self, nerf: NeRF, points: torch.Tensor) -> torch.Tensor:
        """World points [M, 3] -> the NeRF's encoding [M, E], without gradients."""
        with torch.no_grad():
            return nerf.encoding((points / nerf.config.bound + 1) / 2)

    def render(self, representation, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        nerf, c = representation, representation.config
        B, H, W = len(cameras), cameras.height, cameras.width
        origins, directions, _ = camera_rays(cameras.to(nerf.encoding.tables.device))
        origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
        near, far = ray_box(origins, directions, c.bound)
        t, deltas = stratified_samples(near, far, c.samples_per_ray, jitter=False)
        points = origins[:, None] + directions[:, None] * t[..., None]  # [R, S, 3]
        mask = (far > near)[:, None] & nerf.occupancy.query(points)
        with torch.no_grad():
            sigma = torch.zeros(mask.shape, device=t.device).index_put((mask,), nerf.density(points[mask]))
            weights = render_weights(sigma, deltas)[0]  # [R, S]
        rays = mask.nonzero(as_tuple=True)[0]
        latent = self.head(self._encode(nerf, points[mask]))  # [M, d]
        composite = torch.zeros(origins.shape[0], self.latent_dim, device=t.device).index_add(
            0, rays, weights[mask][:, None] * latent)
        alpha = weights.sum(-1).reshape(B, H, W, 1)
        return self.decode_render(composite.reshape(B, H, W, -1), alpha), alpha

    def points(self, representation) -> torch.Tensor:
        """Occupancy-grid cell centres [R^3, 3] (x-major)."""
        return representation.occupancy.cell_points(jitter=False)

    def occupied(self, representation) -> torch.Tensor:
        """[R^3] bool: cells whose density is above the occupancy threshold (not dilated)."""
        grid = representation.occupancy
        return (grid.density > grid.density_threshold).reshape(-1)

    def latents(self, representation) -> torch.Tensor:
        return self.head(self._encode(representation, self.points(representation)))

    def geometry_tensors(self, representation) -> list[torch.Tensor]:
        return [representation.encoding.tables, *representation.density_mlp.parameters()]


__all__ = ["NeRFFeatureField"]
