"""Hash-grid NeRF for score distillation (DreamFusion / Magic3D style), sized for a CPU.

Geometry and colour come from one multiresolution hash encoding of the box [-bound, bound]^3
(native C++ kernel, `sds3d.cuda.hash_grid`) feeding two small ReLU MLPs:

- density sigma = softplus(raw + blob(x)) (or trunc_exp), where the Magic3D "blob"
  blob_density * (1 - |x| / blob_radius) makes optimisation start from a soft ball at the centre;
- albedo = sigmoid(MLP(encoding)), view-independent as in DreamFusion.

Rendering takes S stratified samples per ray through the box, skips those in empty cells of an
occupancy grid (refreshed from the density every `occupancy_update_every` steps in `after_step`),
evaluates each ray in `segments_per_ray` segments and stops it (early ray termination) after the
segment that leaves its transmittance below `early_stop_eps`, and composites with the usual
quadrature (`volume_rendering.py`). Normals are n = -grad(sigma) / |grad(sigma)|: the encoding's
vector-Jacobian product with the density MLP's input gradient (analytic, no finite differences),
differentiable so that shading and the orientation loss train the geometry. They are computed only
when needed (lit views, gradients enabled, or `render(..., normals=True)`).

Shading (DreamFusion): while training (module in train mode and gradients enabled) each view is
shaded "albedo", "lambertian" (albedo * (ambient + diffuse * max(0, n . l)) with a random point
light near the camera) or "textureless" (the same with a white albedo), drawn with
`shading_probabilities`; otherwise albedo. `render(..., shading=...)` forces one.

Regularisers: `meta["regularizers"]` holds the unweighted orientation loss (Ref-NeRF / DreamFusion:
sum_i stopgrad(w_i) max(0, n_i . d)^2 per ray, averaged over rays that hit something), the opacity
penalty mean(sqrt(alpha^2 + 0.01)) and the alpha entropy; `meta["regularizer_loss"]` is their sum
weighted by the config, for the generation loop to add to the guidance loss.

Random draws (jitter, shading, light) use torch's global RNG, which the generation loop seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function

from sds3d.cameras import Cameras, turntable_cameras
from sds3d.cuda.hash_grid import HashGridEncoding
from sds3d.types import RenderOutput
from .alpha_regularizers import alpha_entropy, alpha_sparsity
from .base import Representation
from .distill import distill
from .mesh import Mesh
from .meshing import density_grid, density_to_mesh, silhouette_level
from .occupancy_grid import OccupancyGrid
from .volume_rendering import camera_rays, ray_box, render_weights, stratified_samples

SHADINGS = ("albedo", "lambertian", "textureless")
# densities (per unit length) tried as the surface by `to_mesh`: it keeps the one whose silhouettes
# match the rendered alpha best (faint, light-coloured NeRFs need a low level)
SURFACE_DENSITIES = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 40.0)


@dataclass
class NeRFConfig:
    bound: float = 1.0  # the scene is the box [-bound, bound]^3
    # hash encoding: smaller than Instant-NGP's (16 levels, 2^19 rows, up to 2048) for 32x32 renders
    levels: int = 8
    features_per_level: int = 2
    log2_table_size: int = 16
    base_resolution: int = 16
    max_resolution: int = 256
    backend: str = "auto"  # hash-grid kernel: auto | native | reference | cuda
    hidden_dim: int = 32
    hidden_layers: int = 1
    # density = activation(raw + blob_density * (1 - |x| / blob_radius))
    density_activation: str = "softplus"  # softplus | trunc_exp
    blob_density: float = 10.0
    blob_radius: float = 0.5
    # ray marching
    samples_per_ray: int = 64
    segments_per_ray: int = 4  # rays are marched in this many segments of samples ...
    early_stop_eps: float = 1e-4  # ... and stop after one that leaves their transmittance below this
    occupancy_resolution: int = 48
    occupancy_update_every: int = 16  # steps
    occupancy_decay: float = 0.95
    occupancy_threshold: float = 0.01  # optical thickness over one nominal step that marks a cell occupied
    render_chunk: int = 16384  # rays per chunk when rendering without gradients
    # shading
    shading_probabilities: tuple[float, float, float] = (0.2, 0.4, 0.4)  # albedo, lambertian, textureless
    albedo_only_steps: int = 0  # shade with albedo only for the first steps
    ambient: float = 0.1
    diffuse: float = 0.9
    light_distance_range: tuple[float, float] = (0.8, 1.5)  # times the camera's distance to the origin
    light_direction_jitter: float = 1.0  # std of the perturbation of the camera direction
    # regulariser weights (meta["regularizer_loss"])
    orientation_weight: float = 1e-2
    opacity_weight: float = 0.0
    entropy_weight: float = 0.0
    # learning rates (threestudio's DreamFusion configs use 0.01 throughout)
    lr_encoding: float = 1e-2
    lr_density: float = 1e-2
    lr_albedo: float = 1e-2


class _TruncExp(Function):
    """exp(x) whose gradient uses exp(min(x, 15)) (Instant-NGP / torch-ngp's trunc_exp)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


class MLP(nn.Module):
    """Linear layers with ReLU in between. Initialised like nn.Linear, from `generator`."""

    def __init__(self, in_dim: int, hidden_dim: int, hidden_layers: int, out_dim: int,
                 generator: torch.Generator | None = None):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * hidden_layers + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        with torch.no_grad():
            for layer in self.layers:
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.copy_((torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound)
                layer.bias.copy_((torch.rand(layer.bias.shape, generator=generator) * 2 - 1) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)

    def forward_with_input_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For a scalar output: x [N, D] -> (y [N, 1], dy/dx [N, D]), both differentiable w.r.t. the
        weights (the gradient is back-propagated by hand, so it also works under no_grad)."""
        masks = []
        for layer in self.layers[:-1]:
            h = layer(x)
            masks.append(h > 0)
            x = h * masks[-1]
        y = self.layers[-1](x)
        grad = self.layers[-1].weight.expand(x.shape[0], -1)  # [N, hidden]
        for layer, mask in zip(reversed(self.layers[:-1]), reversed(masks)):
            grad = (grad * mask) @ layer.weight
        return y, grad


class NeRF(Representation):
    def __init__(self, config: NeRFConfig | None = None, generator: torch.Generator | None = None):
        """A NeRF whose density starts as the centre blob (hash tables near zero)."""
        super().__init__()
        self.config = c = config or NeRFConfig()
        if c.density_activation not in ("softplus", "trunc_exp"):
            raise ValueError(f"density_activation must be 'softplus' or 'trunc_exp', got {c.density_activation!r}")
        if len(c.shading_probabilities) != len(SHADINGS) or min(c.shading_probabilities) < 0:
            raise ValueError("shading_probabilities: three non-negative numbers (albedo, lambertian, textureless)")
        self.encoding = HashGridEncoding(c.levels, c.features_per_level, c.log2_table_size, c.base_resolution,
                                         max_resolution=c.max_resolution, backend=c.backend, generator=generator)
        self.density_mlp = MLP(self.encoding.output_dim, c.hidden_dim, c.hidden_layers, 1, generator)
        self.albedo_mlp = MLP(self.encoding.output_dim, c.hidden_dim, c.hidden_layers, 3, generator)
        self.occupancy = OccupancyGrid(c.occupancy_resolution, c.bound, c.occupancy_threshold / self.nominal_step,
                                       c.occupancy_decay)
        self.register_buffer("global_step", torch.zeros((), dtype=torch.long))
        self.occupancy.update(self.density, reset=True, jitter=False)

    @classmethod
    def create(cls, config: NeRFConfig, generator: torch.Generator | None = None) -> "NeRF":
        """A run's fresh start: the centre blob, hash tables and MLPs drawn from `generator`."""
        return cls(config, generator)

    @classmethod
    def initialise_from(cls, source: Representation, config: NeRFConfig, generator: torch.Generator | None = None,
                        distill_steps: int = 300) -> "NeRF":
        """A fresh NeRF fitted to `source`'s renders by `distill` (`distill_steps` steps)."""
        nerf = cls(config, generator)
        distill(source, nerf, distill_steps, generator=generator)
        return nerf

    @property
    def nominal_step(self) -> float:
        """Sample spacing along the box diagonal."""
        return 2 * math.sqrt(3) * self.config.bound / self.config.samples_per_ray

    # ----- fields ------------------------------------------------------------------------------

    def _blob(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 3] world -> density bias [N] and its gradient [N, 3]."""
        c = self.config
        r = x.norm(dim=-1).clamp_min(1e-9)
        return c.blob_density * (1 - r / c.blob_radius), -c.blob_density / c.blob_radius * x / r[:, None]

    def _activate(self, s: torch.Tensor) -> torch.Tensor:
        return F.softplus(s) if self.config.density_activation == "softplus" else _TruncExp.apply(s)

    def _to_unit(self, x: torch.Tensor) -> torch.Tensor:
        return (x / self.config.bound + 1) / 2

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] world -> sigma [N] >= 0."""
        raw = self.density_mlp(self.encoding(self._to_unit(x)))[:, 0]
        return self._activate(raw + self._blob(x)[0])

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] world -> albedo [N, 3] in (0, 1)."""
        return torch.sigmoid(self.albedo_mlp(self.encoding(self._to_unit(x))))

    def _evaluate(self, x: torch.Tensor, with_normals: bool = True):
        """x [N, 3] world -> sigma [N], outward unit normals [N, 3] (None without `with_normals`),
        albedo [N, 3] in (0, 1)."""
        u = self._to_unit(x)
        features = self.encoding(u)
        blob, d_blob = self._blob(x)
        albedo = torch.sigmoid(self.albedo_mlp(features))
        if not with_normals:
            return self._activate(self.density_mlp(features)[:, 0] + blob), None, albedo
        raw, d_raw = self.density_mlp.forward_with_input_gradient(features)
        sigma = self._activate(raw[:, 0] + blob)
        # grad sigma = activation' * grad(raw + blob), activation' > 0: the direction is grad(raw + blob)
        grad = self.encoding.points_vjp(d_raw, u) / (2 * self.config.bound) + d_blob
        return sigma, -F.normalize(grad, dim=-1), albedo

    # ----- rendering ---------------------------------------------------------------------------

    def _draw_shading(self, n_views: int) -> list[str]:
        c = self.config
        if int(self.global_step) < c.albedo_only_steps:
            return ["albedo"] * n_views
        picks = torch.multinomial(torch.tensor(c.shading_probabilities, dtype=torch.float32), n_views, replacement=True)
        return [SHADINGS[i] for i in picks.tolist()]

    def _draw_lights(self, cameras: Cameras) -> torch.Tensor:
        """[B, 3] point-light positions around the camera directions (DreamFusion)."""
        c, centers = self.config, cameras.centers.float()
        distance = centers.norm(dim=-1, keepdim=True)
        direction = F.normalize(centers + torch.randn(centers.shape) * c.light_direction_jitter, dim=-1)
        lo, hi = c.light_distance_range
        return direction * distance * (lo + (hi - lo) * torch.rand(centers.shape[0], 1))

    def _render_rays(self, origins, directions, z_per_t, shading, lights, jitter: bool, with_normals: bool) -> dict:
        """Rays [R, 3], [R, 3], [R], shading codes [R] (index into SHADINGS), lights [R, 3] ->
        dict of rgb [R, 3] (not composited), alpha [R], depth [R], normal [R, 3] (None without
        `with_normals`), orientation (sum over samples) and the number of evaluated samples."""
        c = self.config
        R, S = origins.shape[0], c.samples_per_ray
        near, far = ray_box(origins, directions, c.bound)
        t, deltas = stratified_samples(near, far, S, jitter)
        points = origins[:, None] + directions[:, None] * t[..., None]  # [R, S, 3]
        mask = (far > near)[:, None] & self.occupancy.query(points)
        # March in segments; rays whose transmittance (so far) fell below early_stop_eps stop.
        alive, optical = torch.ones(R, dtype=torch.bool, device=t.device), torch.zeros(R, device=t.device)
        flat_index, fields = [], []
        for seg in torch.arange(S, device=t.device).chunk(c.segments_per_ray):
            seg_mask = mask[:, seg] & alive[:, None]
            rays, columns = seg_mask.nonzero(as_tuple=True)
            sample = rays * S + seg[columns]
            result = self._evaluate(points.reshape(-1, 3)[sample], with_normals)
            flat_index.append(sample)
            fields.append(result)
            with torch.no_grad():
                optical.index_add_(0, rays, result[0].detach() * deltas.reshape(-1)[sample])
                alive &= torch.exp(-optical) > c.early_stop_eps
        sample = torch.cat(flat_index)  # [N] indices into the R x S samples
        sigma, albedo = torch.cat([f[0] for f in fields]), torch.cat([f[2] for f in fields])
        normals = torch.cat([f[1] for f in fields]) if with_normals else None
        ray_index = sample // S
        x = points.reshape(-1, 3)[sample]
        weights = render_weights(torch.zeros(R * S, device=t.device).index_put((sample,), sigma).reshape(R, S),
                                 deltas)[0]
        w = weights.reshape(-1)[sample]  # [N]
        color = albedo
        if with_normals:
            code = shading[ray_index]
            light_dir = F.normalize(lights[ray_index] - x, dim=-1)
            shade = c.ambient + c.diffuse * (normals * light_dir).sum(-1, keepdim=True).clamp_min(0.0)  # [N, 1]
            color = torch.where((code == 0)[:, None], albedo,
                                torch.where((code == 1)[:, None], albedo * shade, shade.expand(-1, 3)))

        def accumulate(values: torch.Tensor) -> torch.Tensor:  # [N, 3] per sample -> [R, 3] weighted sums
            return torch.zeros(R, 3, dtype=w.dtype, device=w.device).index_add(0, ray_index, w[:, None] * values)

        alpha = weights.sum(-1)
        depth = (weights * t).sum(-1) / alpha.clamp_min(1e-12) * z_per_t
        orientation = torch.zeros((), device=w.device)
        if with_normals:
            facing_away = (normals * directions[ray_index]).sum(-1).clamp_min(0.0)
            orientation = (w.detach() * facing_away**2).sum()
        return {"rgb": accumulate(color), "alpha": alpha, "depth": torch.where(alpha > 0, depth, 0.0),
                "normal": accumulate(normals) if with_normals else None, "orientation": orientation,
                "samples": x.shape[0]}

    def render(self, cameras: Cameras, background: torch.Tensor | None = None, shading: str | None = None,
               normals: bool = False) -> RenderOutput:
        """B views -> RenderOutput: rgb over `background` ([3] or [B, 3], default white), alpha,
        depth, alpha-weighted world normals (computed whenever a view is lit or gradients are
        enabled, for the orientation loss, or with `normals=True`; else None) and meta
        (regularizers, regularizer_loss, shading, samples, occupancy)."""
        c = self.config
        device = self.encoding.tables.device
        cameras = cameras.to(device)
        B, H, W = len(cameras), cameras.height, cameras.width
        training = self.training and torch.is_grad_enabled()
        if shading is not None and shading not in SHADINGS:
            raise ValueError(f"shading must be one of {', '.join(SHADINGS)}, got {shading!r}")
        shadings = [shading] * B if shading else (self._draw_shading(B) if training else ["albedo"] * B)
        lit = any(s != "albedo" for s in shadings)
        lights = self._draw_lights(cameras).to(device) if lit else torch.zeros(B, 3, device=device)
        origins, directions, z_per_t = camera_rays(cameras)
        per_view = H * W
        view_of_ray = torch.arange(B, device=device).repeat_interleave(per_view)
        codes = torch.tensor([SHADINGS.index(s) for s in shadings], device=device)[view_of_ray]
        rays = (origins.reshape(-1, 3), directions.reshape(-1, 3), z_per_t.reshape(-1), codes, lights[view_of_ray])
        with_normals = normals or lit or torch.is_grad_enabled()
        chunk = B * per_view if torch.is_grad_enabled() else c.render_chunk
        parts = [self._render_rays(*(r[i:i + chunk] for r in rays), jitter=training, with_normals=with_normals)
                 for i in range(0, B * per_view, chunk)]
        out = {k: torch.cat([p[k] for p in parts]) for k in ("rgb", "alpha", "depth")}
        alpha = out["alpha"].reshape(B, H, W, 1)
        if background is None:
            background = torch.ones(3, device=device)
        background = background.to(device=device, dtype=alpha.dtype).reshape(-1, 1, 1, 3)
        rgb = out["rgb"].reshape(B, H, W, 3) + (1 - alpha) * background
        hit_rays = (out["alpha"] > 0).sum().clamp_min(1)
        regularizers = {
            "orientation": sum(p["orientation"] for p in parts) / hit_rays,
            "opacity": alpha_sparsity(out["alpha"]),
            "entropy": alpha_entropy(out["alpha"]),
        }
        weights = {"orientation": c.orientation_weight, "opacity": c.opacity_weight, "entropy": c.entropy_weight}
        meta = {"regularizers": regularizers,
                "regularizer_loss": sum(weights[k] * v for k, v in regularizers.items()),
                "shading": shadings, "samples": sum(p["samples"] for p in parts),
                "occupancy": self.occupancy.occupancy}
        normal = torch.cat([p["normal"] for p in parts]).reshape(B, H, W, 3) if with_normals else None
        return RenderOutput(rgb=rgb, alpha=alpha, depth=out["depth"].reshape(B, H, W, 1), normal=normal, meta=meta)

    def to_mesh(self, resolution: int = 128, bound: float = 0.6) -> Mesh:
        """Marching cubes of the density at the level of `SURFACE_DENSITIES` whose silhouettes best
        match 8 albedo renders (`silhouette_level`), vertex colours from the albedo."""
        volume = density_grid(self.density, resolution, bound)
        cameras = turntable_cameras(8, elevation=20.0, width=64)
        with torch.no_grad():
            alpha = self.render(cameras, shading="albedo").alpha
        level = silhouette_level(volume, bound, cameras, alpha, SURFACE_DENSITIES)
        return density_to_mesh(self.density, level, resolution, bound, color_fn=self.albedo, volume=volume)

    # ----- optimisation --------------------------------------------------------------------------

    def param_groups(self) -> list[dict]:
        c = self.config
        return [{"name": "encoding", "params": [self.encoding.tables], "lr": c.lr_encoding},
                {"name": "density_mlp", "params": list(self.density_mlp.parameters()), "lr": c.lr_density},
                {"name": "albedo_mlp", "params": list(self.albedo_mlp.parameters()), "lr": c.lr_albedo}]

    def stats(self) -> dict[str, int | float]:
        return {"occupancy": round(self.occupancy.occupancy, 3)}

    def after_step(self, step: int, output: RenderOutput, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Counts steps; refreshes the occupancy grid every `occupancy_update_every` steps."""
        self.global_step.fill_(step + 1)
        every = self.config.occupancy_update_every
        if every and (step + 1) % every == 0:
            self.occupancy.update(self.density)


__all__ = ["NeRF", "NeRFConfig", "SHADINGS", "SURFACE_DENSITIES"]
