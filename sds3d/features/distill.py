"""Distilling a 2D teacher's per-pixel features into a feature field on a finished 3D asset.

1. Views: `views` orbit cameras around the asset's bounding sphere (golden-angle azimuths, three
   elevations), at `resolution` pixels; the asset's own renders go through the teacher once,
   giving targets T [V, D, h, w] (`teacher_targets`), upsampled to `resolution` when coarser.
2. Initialisation: the decoder starts as a PCA of the teacher's foreground features (mean and top d
   directions), and for Gaussians each latent as the splat-weighted mean of the projected targets
   over the pixels the Gaussian reaches (`FeatureField.lift`, LUDVIG's learning-free uplifting).
   For Gaussians this lift does most of the work: on the micro-world mug with the ground-truth
   part teacher it selects the handle at IoU 0.83 before any step (3000 Gaussians, 64 px views);
   the L1 steps that follow lower the render loss but not the selection error (100 steps at the
   default learning rate: handle IoU 0.81), so they are few by default.
3. Optimisation: Adam on the field only (latents or head, and decoder) for `steps` steps of
   `views_per_step` views, loss between the alpha-weighted feature render F and alpha T:
   L1 (Feature-3DGS, the default), squared L2 (DFF) or 1 - cosine per foreground pixel. Geometry
   is detached inside the field's renders, so the asset itself is unchanged, bit for bit.

Reference: Feature 3DGS: Supercharging 3D Gaussian Splatting to Enable Distilled Feature Fields, arXiv:2312.03203
Reference: Decomposing NeRF for Editing via Feature Field Distillation, arXiv:2205.15585
Reference: LERF: Language Embedded Radiance Fields, arXiv:2303.09553
Reference: LUDVIG: Learning-free Uplifting of 2D Visual features to Gaussian Splatting scenes, arXiv:2410.14462
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field as dataclass_field, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sds3d.cameras import Cameras, intrinsics_from_fov, look_at, orbit_position
from sds3d.errors import InputError
from .field import FeatureField, attach_field, field_for

LOSSES = ("l1", "l2", "cosine")


@dataclass
class DistillConfig:
    steps: int = 20  # after the lift (which does most of the work for Gaussians; see above)
    latent_dim: int = 16  # d: stored channels per point (capped at the teacher's width)
    views: int = 24  # teacher views, rendered once
    resolution: int = 128  # renders the teacher sees; coarser teacher maps are upsampled to it
    views_per_step: int = 2
    lr: float | None = None  # latents / feature head; None = the field's `learning_rate`
    decoder_lr: float = 1e-3
    loss: str = "l1"  # l1 | l2 | cosine
    seed: int = 0


@dataclass
class DistillResult:
    field: FeatureField
    losses: list[float] = dataclass_field(default_factory=list)  # per step
    seconds: float = 0.0


def check_config(config: DistillConfig) -> None:
    """InputError (one line) for a value out of range."""
    for name in ("steps", "latent_dim", "views", "resolution", "views_per_step"):
        if getattr(config, name) < (0 if name == "steps" else 1):
            raise InputError(f"distill: {name} must be positive, got {getattr(config, name)}")
    if config.loss not in LOSSES:
        raise InputError(f"distill: loss must be one of {', '.join(LOSSES)}, got {config.loss!r}")


def distillation_cameras(points: torch.Tensor, n_views: int, resolution: int, fovy: float = 40.0) -> Cameras:
    """`n_views` cameras looking at the centre of `points` [N, 3] from golden-angle azimuths and
    elevations -5, 20, 45 degrees, far enough that the points' bounding sphere (98th percentile
    radius) fills 90% of the view."""
    if len(points) == 0:
        raise InputError("the asset is empty: there is nothing to distill features onto")
    index = torch.arange(n_views, dtype=torch.float32)
    azimuth = (index * 137.50776 + 180.0) % 360.0 - 180.0
    elevation = torch.tensor([-5.0, 20.0, 45.0])[torch.arange(n_views) % 3]
    return cameras_around(points, elevation, azimuth, resolution, fovy)


def cameras_around(points: torch.Tensor, elevation, azimuth, resolution: int, fovy: float = 40.0,
                   distance=1.0) -> Cameras:
    """Cameras at `elevation`, `azimuth` (degrees) [B] looking at the centre of `points` [N, 3] from
    `distance` (scalar or [B]) times the distance at which the points' bounding sphere (98th
    percentile radius) fills 90% of the view."""
    points = points.detach().float()
    elevation = torch.as_tensor(elevation, dtype=torch.float32)
    azimuth = torch.as_tensor(azimuth, dtype=torch.float32)
    B = len(elevation)
    centre = (points.amin(0) + points.amax(0)) / 2
    extent = float(torch.quantile((points - centre).norm(dim=-1)[:100000], 0.98))
    fill = max(extent, 1e-3) / math.sin(math.radians(fovy) / 2) / 0.9
    radius = torch.as_tensor(distance, dtype=torch.float32).expand(B) * fill
    eyes = centre + orbit_position(elevation, azimuth, radius)
    return Cameras(viewmats=look_at(eyes, centre[None]), Ks=intrinsics_from_fov(torch.full((B,), fovy),
                   resolution, resolution), width=resolution, height=resolution, elevation=elevation,
                   azimuth=azimuth, radius=radius.clone(), fovy=torch.full((B,), fovy))


def resized(cameras: Cameras, width: int, height: int) -> Cameras:
    """The same views rendered at width x height."""
    Ks = cameras.Ks.clone()
    Ks[:, 0] *= width / cameras.width
    Ks[:, 1] *= height / cameras.height
    return replace(cameras, Ks=Ks, width=width, height=height)


@torch.no_grad()
def teacher_targets(teacher, representation, cameras: Cameras, batch: int = 8) -> torch.Tensor:
    """The teacher's features of the asset's renders (white background): [V, D, h, w]."""
    chunks = []
    for start in range(0, len(cameras), batch):
        views = cameras[list(range(start, min(start + batch, len(cameras))))]
        images = representation.render(views).rgb.clamp(0, 1).permute(0, 3, 1, 2)
        chunks.append(teacher.image_features(images.float()).float())
    targets = torch.cat(chunks)
    if targets.ndim != 4 or targets.shape[0] != len(cameras) or targets.shape[1] != teacher.dim:
        raise InputError(f"teacher {teacher.name}: image_features returned {tuple(targets.shape)}, "
                         f"expected [{len(cameras)}, {teacher.dim}, h, w]")
    return targets


def _pca(samples: torch.Tensor, components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """samples [M, D] -> (basis [D, components] with orthonormal columns (zero-padded when the
    samples span fewer), mean [D])."""
    mean = samples.mean(0)
    _, _, vh = torch.linalg.svd(samples - mean, full_matrices=False)
    basis = torch.zeros(samples.shape[1], components)
    k = min(components, vh.shape[0])
    basis[:, :k] = vh[:k].T
    return basis, mean


def distillation_loss(rendered: torch.Tensor, target: torch.Tensor, alpha: torch.Tensor, kind: str) -> torch.Tensor:
    """rendered [B, H, W, D] (alpha-weighted), target [B, H, W, D] (unit length), alpha [B, H, W, 1]."""
    if kind == "l1":
        return (rendered - alpha * target).abs().mean()
    if kind == "l2":
        return (rendered - alpha * target).square().sum(-1).mean()
    cosine = F.cosine_similarity(rendered, target, dim=-1, eps=1e-8)[..., None]
    return (alpha * (1 - cosine)).sum() / alpha.sum().clamp_min(1e-8)


def fit_field(representation, field: FeatureField, cameras: Cameras, targets: torch.Tensor,
              config: DistillConfig | None = None, progress: bool = True) -> list[float]:
    """Fit `field` to teacher targets [V, D, h, w] seen from `cameras`: PCA decoder, lift, then
    `config.steps` optimisation steps. Targets coarser than the cameras are upsampled to their size
    (bilinear, renormalised), so the splat weights are fine even when the teacher's maps are coarse
    (a 32x32 map lifted at 64x64 selects the micro-world mug's handle at IoU 0.91 instead of 0.77).
    -> losses."""
    config = config or DistillConfig()
    check_config(config)
    V, D, h, w = targets.shape
    if D != field.dim or V != len(cameras):
        raise InputError(f"targets [{V}, {D}, ...] do not match {len(cameras)} cameras and a {field.dim}-wide field")
    if (h, w) != (cameras.height, cameras.width):  # coarse teacher maps: fit at the render size
        targets = F.normalize(F.interpolate(targets, size=(cameras.height, cameras.width), mode="bilinear",
                                            align_corners=False), dim=1)
        V, D, h, w = targets.shape
    targets = targets.permute(0, 2, 3, 1).contiguous()  # [V, h, w, D]
    with torch.no_grad():
        alphas = field.render(representation, cameras)[1]  # [V, h, w, 1]
        generator = torch.Generator().manual_seed(config.seed)
        foreground = targets[alphas[..., 0] > 0.5]
        if len(foreground) < 2:
            raise InputError("the asset covers no pixel of the distillation views: nothing to distill")
        pick = torch.randperm(len(foreground), generator=generator)[:20000]
        basis, mean = _pca(foreground[pick], field.latent_dim)
        field.init_decoder(basis, mean)
        field.lift(representation, cameras, (targets - mean) @ basis)
    if config.steps == 0:
        return []
    decoder = list(field.decoder.parameters())
    others = [p for p in field.parameters() if all(p is not q for q in decoder)]
    lr = field.learning_rate if config.lr is None else config.lr
    optimizer = torch.optim.Adam([{"params": others, "lr": lr}, {"params": decoder, "lr": config.decoder_lr}])
    losses, order = [], torch.empty(0, dtype=torch.long)
    bar = tqdm(range(config.steps), desc="distilling features", unit="step", disable=not progress)
    for _ in bar:
        if len(order) < config.views_per_step:
            order = torch.cat([order, torch.randperm(V, generator=generator)])
        views, order = order[:config.views_per_step], order[config.views_per_step:]
        rendered, alpha = field.render(representation, cameras[views.tolist()])
        loss = distillation_loss(rendered, targets[views], alpha, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    return losses


def distill_features(representation, teacher, config: DistillConfig | None = None, progress: bool = True,
                     teacher_path: str = "") -> DistillResult:
    """Distil `teacher` (a FeatureTeacher) into a new feature field on `representation`, attached
    to it (`feature_field_of`). `teacher_path` is recorded for later queries ("" = the shipped one)."""
    config = config or DistillConfig()
    check_config(config)
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    field = field_for(representation, teacher.dim, min(config.latent_dim, teacher.dim), teacher.name,
                      torch.Generator().manual_seed(config.seed))
    field.teacher_path, field.teacher_version = teacher_path, getattr(teacher, "version", "")
    points = field.points(representation)[field.occupied(representation)]
    cameras = distillation_cameras(points, config.views, config.resolution)
    representation.eval()
    targets = teacher_targets(teacher, representation, cameras)
    losses = fit_field(representation, field, cameras, targets, config, progress)
    attach_field(representation, field)
    return DistillResult(field, losses, time.perf_counter() - start)


__all__ = ["DistillConfig", "DistillResult", "LOSSES", "distill_features", "distillation_cameras",
           "distillation_loss", "fit_field", "resized", "teacher_targets"]
