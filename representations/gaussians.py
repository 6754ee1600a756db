"""3D Gaussians: means, log-scales, quaternions, opacity logits, SH colour, optional features.

Parameters live in an nn.ParameterDict with gsplat's names (`means`, `scales`, `quats`,
`opacities`, `sh0`, `shN`, `features`) so gsplat's densification strategies drive them directly.
Colour is 3DGS's: rgb = max(SH(view dir) + 0.5, 0); SH degree 0 keeps `shN` empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sds3d.cameras import Cameras
from sds3d.cuda.gaussian_rasterizer import rasterize_gaussians
from sds3d.types import RenderOutput
from .base import Representation
from .color_smoothness import color_smoothness, nearest_neighbours
from .gaussian_densification import DensificationConfig, GaussianDensifier
from .gaussian_ply import load_gaussian_ply, save_gaussian_ply, save_gaussian_splat
from .hidden_gaussians import hidden_gaussians
from .mesh import Mesh, as_mesh
from .meshing import gaussians_to_mesh
from .spherical_harmonics import C0, evaluate_sh, rgb_to_sh0


@dataclass
class GaussiansConfig:
    num_points: int = 2048
    init: str = "sphere"  # "sphere" (random in a ball), or set by from_points / from_mesh
    init_radius: float = 0.5
    init_opacity: float = 0.1
    sh_degree: int = 0
    feature_dim: int = 0  # extra rendered channels per Gaussian (feature distillation)
    backend: str = "auto"  # rasterizer: auto | native | reference | gsplat
    rasterize_mode: str = "classic"  # classic (3DGS) | antialiased (Mip-Splatting opacity compensation)
    eps2d: float = 0.3  # screen-space dilation in px^2: 3DGS uses 0.3; Mip-Splatting's antialiased mode 0.1
    lr_means: float = 1e-3
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacities: float = 5e-2
    lr_sh0: float = 1e-2
    lr_shN: float = 5e-4
    lr_features: float = 1e-2
    densify: DensificationConfig = field(default_factory=DensificationConfig)
    prune_hidden: bool = True  # after the last step, prune the Gaussians a white background hides (white fog)

    def for_steps(self, steps: int) -> GaussiansConfig:
        """This config for a run of `steps` steps (`DensificationConfig.for_steps`)."""
        return replace(self, densify=self.densify.for_steps(steps))


def _nearest_neighbour_scale(points: np.ndarray, k: int = 3) -> np.ndarray:
    """Mean distance to the k nearest neighbours, per point: the usual 3DGS initial scale."""
    from scipy.spatial import cKDTree

    if len(points) <= k:
        return np.full(len(points), 0.05, dtype=np.float32)
    distances, _ = cKDTree(points).query(points, k=k + 1)
    return np.maximum(distances[:, 1:].mean(axis=1), 1e-4).astype(np.float32)


class Gaussians(Representation):
    def __init__(self, means: torch.Tensor, rgb: torch.Tensor, scales: torch.Tensor | None = None,
                 opacities: torch.Tensor | None = None, config: GaussiansConfig | None = None):
        """means [N, 3], rgb [N, 3] in [0, 1], scales [N, 3] activated (default: from neighbours),
        opacities [N] activated (default `config.init_opacity`)."""
        super().__init__()
        self.config = config or GaussiansConfig()
        n = means.shape[0]
        if scales is None:
            scales = torch.from_numpy(_nearest_neighbour_scale(means.detach().cpu().numpy()))[:, None].repeat(1, 3)
        if opacities is None:
            opacities = torch.full((n,), self.config.init_opacity)
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1
        k = (self.config.sh_degree + 1) ** 2
        self.params = nn.ParameterDict({
            "means": nn.Parameter(means.float().clone()),
            "scales": nn.Parameter(torch.log(scales.float())),
            "quats": nn.Parameter(quats),
            "opacities": nn.Parameter(torch.logit(opacities.float().clamp(1e-4, 1 - 1e-4))),
            "sh0": nn.Parameter(rgb_to_sh0(rgb.float())[:, None, :].clone()),
            "shN": nn.Parameter(torch.zeros(n, k - 1, 3)),
            "features": nn.Parameter(torch.zeros(n, self.config.feature_dim)),
        })
        self.densifier = GaussianDensifier(self.config.densify)
        self._neighbours: torch.Tensor | None = None  # [N, k] for `color_smoothness_loss`,
        self._neighbours_step = 0  # computed at this step

    # ----- construction ------------------------------------------------------------------------

    @classmethod
    def random_in_sphere(cls, config: GaussiansConfig | None = None, generator: torch.Generator | None = None):
        """`num_points` uniform in a ball of radius `init_radius`, random colours."""
        config = config or GaussiansConfig()
        n = config.num_points
        direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
        radius = config.init_radius * torch.rand(n, 1, generator=generator) ** (1 / 3)
        rgb = torch.rand(n, 3, generator=generator)
        return cls(direction * radius, rgb, config=config)

    @classmethod
    def create(cls, config: GaussiansConfig, generator: torch.Generator | None = None) -> "Gaussians":
        """A run's fresh start: `random_in_sphere`."""
        return cls.random_in_sphere(config, generator)

    @classmethod
    def initialise_from(cls, source: Representation, config: GaussiansConfig,
                        generator: torch.Generator | None = None, distill_steps: int = 300) -> "Gaussians":
        """`config.num_points` flat Gaussians on the surface of `source` (`mesh_to_gaussians` of its
        `to_mesh()`); `distill_steps` is unused (the surface is enough)."""
        return mesh_to_gaussians(source.to_mesh(), num_points=config.num_points, config=config, generator=generator)

    @classmethod
    def from_points(cls, points, colors=None, config: GaussiansConfig | None = None):
        """A point cloud [N, 3] (+ colours [N, 3] in [0, 1] or uint8) -> one Gaussian per point."""
        points = torch.as_tensor(np.asarray(points), dtype=torch.float32)
        if colors is None:
            colors = torch.full_like(points, 0.5)
        colors = torch.as_tensor(np.asarray(colors))
        colors = colors.float() / 255.0 if colors.dtype == torch.uint8 else colors.float()
        return cls(points, colors[:, :3], config=config)

    @classmethod
    def from_mesh(cls, mesh, num_points: int | None = None, config: GaussiansConfig | None = None, seed: int = 0):
        """Surface samples of a trimesh (face colours when it has them), area-uniform."""
        import trimesh

        config = config or GaussiansConfig()
        n = num_points or config.num_points
        points, face_index = trimesh.sample.sample_surface(mesh, n, seed=seed)
        colors = None
        if mesh.visual.kind in ("face", "vertex"):
            colors = np.asarray(mesh.visual.face_colors)[face_index, :3]
        return cls.from_points(points, colors, config=config)

    # ----- activated views -----------------------------------------------------------------------

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    @property
    def means(self) -> torch.Tensor:  # [N, 3]
        return self.params["means"]

    @property
    def scales(self) -> torch.Tensor:  # [N, 3] > 0
        return torch.exp(self.params["scales"])

    @property
    def quats(self) -> torch.Tensor:  # [N, 4] (w, x, y, z), unnormalised
        return self.params["quats"]

    @property
    def opacities(self) -> torch.Tensor:  # [N] in (0, 1)
        return torch.sigmoid(self.params["opacities"])

    @property
    def sh_coeffs(self) -> torch.Tensor:  # [N, K, 3]
        return torch.cat([self.params["sh0"], self.params["shN"]], dim=1)

    def colors(self, cameras: Cameras) -> torch.Tensor:
        """View-dependent RGB [B, N, 3] (>= 0) for each camera."""
        if self.config.sh_degree == 0:
            rgb = self.params["sh0"][:, 0, :] * C0 + 0.5
            return rgb.clamp_min(0.0).expand(len(cameras), -1, -1)
        dirs = self.means[None] - cameras.centers.to(self.means)[:, None]  # [B, N, 3]
        rgb = evaluate_sh(self.config.sh_degree, self.sh_coeffs[None].expand(len(cameras), -1, -1, -1), dirs) + 0.5
        return rgb.clamp_min(0.0)

    # ----- Representation ------------------------------------------------------------------------

    def to_mesh(self, resolution: int = 128, bound: float = 0.6) -> Mesh:
        """`gaussians_to_mesh`: marching cubes of the density, colours of the nearest Gaussians."""
        return gaussians_to_mesh(self, resolution, bound)

    def param_groups(self) -> list[dict]:
        c = self.config
        lrs = {"means": c.lr_means, "scales": c.lr_scales, "quats": c.lr_quats, "opacities": c.lr_opacities,
               "sh0": c.lr_sh0, "shN": c.lr_shN, "features": c.lr_features}
        return [{"name": name, "params": [self.params[name]], "lr": lr} for name, lr in lrs.items()]

    def render(self, cameras: Cameras, background: torch.Tensor | None = None) -> RenderOutput:
        device = self.means.device
        cameras = cameras.to(device)
        colors = self.colors(cameras)
        channels = [colors]
        if self.config.feature_dim:
            channels.append(self.params["features"][None].expand(len(cameras), -1, -1))
        render, alpha, meta = rasterize_gaussians(
            self.means, self.quats, self.scales, self.opacities, torch.cat(channels, dim=-1),
            cameras.viewmats, cameras.Ks, cameras.width, cameras.height, render_mode="RGB+ED",
            rasterize_mode=self.config.rasterize_mode, eps2d=self.config.eps2d, backend=self.config.backend)
        if background is None:
            background = torch.ones(3, device=device)
        background = background.to(device).reshape(-1, 1, 1, 3)
        rgb = render[..., :3] + (1 - alpha) * background
        features = render[..., 3:-1] if self.config.feature_dim else None
        return RenderOutput(rgb=rgb, alpha=alpha, depth=render[..., -1:], features=features, meta=meta)

    def before_backward(self, step: int, output: RenderOutput) -> None:
        self.densifier.before_backward(self.params, step, output.meta)

    def after_step(self, step: int, output: RenderOutput, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        self.densifier.after_step(self.params, optimizers, step, output.meta)

    def finish(self, background: torch.Tensor, optimizers: dict[str, torch.optim.Optimizer]) -> dict:
        """Prunes the Gaussians `background` hides (`hidden_gaussians`), optimiser moments included."""
        if not self.config.prune_hidden or not len(self):
            return {}
        from gsplat.strategy.ops import remove

        hidden = hidden_gaussians(self, background)
        remove(params=self.params, optimizers=optimizers, state=self.densifier.state, mask=hidden)
        self._neighbours = None
        return {"hidden_gaussians_pruned": int(hidden.sum())}

    def training_state(self) -> dict:
        neighbours = None if self._neighbours is None else self._neighbours.clone()
        return {"densifier": self.densifier.state_dict(), "neighbours": neighbours,
                "neighbours_step": self._neighbours_step}

    def load_training_state(self, state: dict) -> None:
        self.densifier.load_state_dict(state["densifier"])
        self._neighbours = state.get("neighbours")
        self._neighbours_step = state.get("neighbours_step", 0)

    def stats(self) -> dict[str, int]:
        return {"gaussians": len(self)}

    # k nearest centres per Gaussian for `color_smoothness_loss`, recomputed when the count changes or
    # once they are this many steps old
    SMOOTHNESS_NEIGHBOURS = 8
    SMOOTHNESS_REFRESH = 50

    def color_smoothness_loss(self, step: int) -> torch.Tensor:
        """Sum over Gaussians of the mean squared difference of base colour (sh0 as RGB) to their nearest
        neighbours (`color_smoothness`); the neighbours follow densification and movement (see above)."""
        if (self._neighbours is None or self._neighbours.shape[0] != len(self)
                or not 0 <= step - self._neighbours_step < self.SMOOTHNESS_REFRESH):
            self._neighbours = nearest_neighbours(self.means.detach(), self.SMOOTHNESS_NEIGHBOURS)
            self._neighbours_step = step
        return color_smoothness(self.params["sh0"][:, 0, :] * C0, self._neighbours)

    # ----- persistence ---------------------------------------------------------------------------

    def save_ply(self, path, up: str = "-y", sh_degree: int | None = None) -> Path:
        """3DGS PLY (`gaussian_ply`): `up` "-y" (splat viewers) | "+y" | "+z"; `sh_degree` 0-3 or the asset's."""
        return save_gaussian_ply(path, self.params, up, sh_degree)

    def save_splat(self, path, up: str = "-y") -> Path:
        """`.splat`, or SuperSplat's compressed PLY for a name ending in `.compressed.ply` (`gaussian_ply`)."""
        return save_gaussian_splat(path, self.params, up)

    @classmethod
    def load_ply(cls, path, config: GaussiansConfig | None = None, up: str | None = None) -> "Gaussians":
        """Any 3DGS PLY (`gaussian_ply`); `up` None = as its header records, else "-y". The SH degree
        and feature size come from the file."""
        params = load_gaussian_ply(path, up)
        count, k = params["shN"].shape[:2]
        config = config or GaussiansConfig()
        config.sh_degree, config.feature_dim = round(math.sqrt(k + 1)) - 1, params["features"].shape[1]
        gaussians = cls(params["means"], torch.zeros(count, 3), scales=torch.ones(count, 3),
                        opacities=torch.full((count,), 0.5), config=config)
        with torch.no_grad():
            for name in ("sh0", "shN", "opacities", "scales", "quats", "features"):
                gaussians.params[name].copy_(params[name])
        return gaussians

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Accepts a state dict with a different number of Gaussians (densification changes N)."""
        for name, param in self.params.items():
            key = f"params.{name}"
            if key in state_dict and state_dict[key].shape != param.shape:
                self.params[name] = nn.Parameter(torch.empty_like(state_dict[key]))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def _quaternions_from_normals(normals: torch.Tensor) -> torch.Tensor:
    """Unit normals [N, 3] -> quaternions (w, x, y, z) [N, 4] of the shortest rotation taking +z
    to each normal (a half turn about x for -z)."""
    nx, ny, nz = normals.unbind(-1)
    quats = torch.stack([1 + nz, -ny, nx, torch.zeros_like(nz)], -1)
    flipped = 1 + nz < 1e-6
    quats[flipped] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=quats.dtype)
    return F.normalize(quats, dim=-1)


def mesh_to_gaussians(mesh, num_points: int = 20000, opacity: float = 0.95, scale: float = 0.7,
                      flatness: float = 0.1, config: GaussiansConfig | None = None,
                      generator: torch.Generator | None = None) -> Gaussians:
    """One flat Gaussian per area-uniform surface sample (a `Mesh` or trimesh), coloured by the
    surface there. With d = sqrt(area / num_points) the mean sample spacing, the in-plane standard
    deviation is `scale` d and the one along the normal `flatness` times that."""
    mesh = as_mesh(mesh)
    points, normals, colors, _, _ = mesh.sample_surface(num_points, generator)
    with torch.no_grad():
        corners = mesh.vertices[mesh.faces]
        area = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=-1).sum() / 2
    sigma = scale * float(torch.sqrt(area / num_points))
    scales = torch.tensor([sigma, sigma, flatness * sigma]).expand(num_points, 3)
    gaussians = Gaussians(points, colors, scales=scales, opacities=torch.full((num_points,), opacity), config=config)
    with torch.no_grad():
        gaussians.params["quats"].copy_(_quaternions_from_normals(normals))
    return gaussians


__all__ = ["Gaussians", "GaussiansConfig", "mesh_to_gaussians"]
