"""Photometric reconstruction: a capture (nerfstudio format) -> 3D Gaussians, as 3DGS trains them.

Reference: 3D Gaussian Splatting for Real-Time Radiance Field Rendering, arXiv:2308.04079

`fit(config)` reads the capture (`sds3d.scene.nerfstudio_data.load_capture`), optionally moves it into
the frame sds3d's turntables expect (`normalize`: the point the cameras look at to the origin, the
median camera distance to 2.5), initialises Gaussians, and optimises them with the native
rasterizer and the densification of `Gaussians` (gsplat's strategy): each step renders
`views_per_step` random training views at full resolution against the loss

    (1 - lambda_dssim) L1 + lambda_dssim (1 - SSIM) / 2

(3DGS's; SSIM with an 11x11 Gaussian window, sigma 1.5), restricted to the frames' masks. Images with
alpha are composited over a random colour each step, the render over the same colour, so empty space
stays empty. The means' learning rate decays exponentially to 1/100 over the run (3DGS's schedule).

Initial points (`init`): "hull" samples the visual hull (points whose projection is inside the
alpha silhouette of every training view, needs alpha), "frustum" the intersection of the training
cameras' view frustums, "sphere" a ball of radius `init_radius`; "auto" is hull with alpha, else
frustum, and either falls back to the next when it finds too few points. Initial colours: the mean
of the pixels the point projects to.

The run folder has `sds3d generate`'s layout, so `sds3d render / export / eval` (and editing) work on
it: config.json (a GenerateConfig whose `gaussians` section is the fit's), checkpoint.pt (atomic,
every `checkpoint_every` steps; `resume=True` continues exactly), asset.ply, turntable.gif,
preview.png, metrics.json (with PSNR on the training views and on the held-out `test` split), plus
fit.json (this config) and fit_views.png (held-out targets above their renders).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sds3d.cameras import Cameras
from sds3d.errors import InputError
from sds3d.representations import Gaussians, GaussiansConfig
from sds3d.representations.gaussian_densification import DensificationConfig
from sds3d.run_folder import replace_earlier_run
from sds3d.scene.nerfstudio_data import CaptureData, load_capture

INITS = ("auto", "hull", "frustum", "sphere")
TARGET_RADIUS = 2.5  # median camera distance after `normalize` (sds3d's turntable radius)


@dataclass
class FitConfig:
    dataset: str = ""  # a nerfstudio capture: its folder or transforms.json
    prompt: str = ""  # what the capture shows ("a red mug"): the run's prompt, which select and edit read
    out: str = "runs/fit"
    steps: int = 1000
    num_gaussians: int = 5000  # initial count; densification grows it up to max_gaussians
    max_gaussians: int = 60000
    sh_degree: int = 0
    init: str = "auto"  # auto | hull | frustum | sphere
    init_radius: float = 0.6  # the "sphere" init's ball, after normalisation
    init_opacity: float = 0.1
    normalize: bool = True
    views_per_step: int = 1
    lambda_dssim: float = 0.2  # 0 = plain L1
    lr_means: float = 4e-4  # decays to lr_means / 100 over the run
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacities: float = 5e-2
    lr_sh0: float = 5e-3
    lr_shN: float = 2.5e-4
    refine_start: int = 100
    refine_stop_fraction: float = 0.6  # densification stops after this fraction of the steps
    refine_every: int = 100
    grow_grad2d: float = 0.0002
    seed: int = 0
    checkpoint_every: int = 500
    turntable_frames: int = 24
    turntable_resolution: int = 128


# fields a resumed fit may change
RESUMABLE = ("steps", "checkpoint_every", "turntable_frames", "turntable_resolution", "out", "prompt")


def validate_fit_config(config: FitConfig) -> None:
    checks = [("steps", 1 <= config.steps <= 10**7), ("num_gaussians", 1 <= config.num_gaussians <= 10**7),
              ("max_gaussians", config.max_gaussians >= config.num_gaussians),
              ("sh_degree", 0 <= config.sh_degree <= 3),
              ("init", config.init in INITS), ("views_per_step", 1 <= config.views_per_step <= 64),
              ("lambda_dssim", 0 <= config.lambda_dssim <= 1), ("init_radius", config.init_radius > 0),
              ("init_opacity", 0 < config.init_opacity < 1),
              ("refine_every", config.refine_every >= 1), ("checkpoint_every", config.checkpoint_every >= 0),
              ("refine_stop_fraction", 0 <= config.refine_stop_fraction <= 1), ("seed", config.seed >= 0),
              ("turntable_frames", 1 <= config.turntable_frames <= 1000)]
    checks += [(name, getattr(config, name) > 0) for name in
               ("lr_means", "lr_scales", "lr_quats", "lr_opacities", "lr_sh0", "lr_shN")]
    bad = next((name for name, ok in checks if not ok), None)
    if bad is not None:
        hint = f" (one of {', '.join(INITS)})" if bad == "init" else ""
        raise InputError(f"fit setting {bad} = {getattr(config, bad)!r} is out of range{hint}")


def gaussians_config(config: FitConfig, scene_scale: float = 1.0) -> GaussiansConfig:
    """The Gaussians' config (saved in config.json, so `load_run` rebuilds them); `scene_scale`: the
    scene's extent, which the densification's size thresholds are relative to (3DGS: 1.1 x the
    largest camera distance from the cameras' centre; here from the look-at point)."""
    densify = DensificationConfig(scene_scale=scene_scale, refine_start_iter=config.refine_start,
                                  refine_stop_iter=int(config.refine_stop_fraction * config.steps),
                                  refine_every=config.refine_every, grow_grad2d=config.grow_grad2d,
                                  max_gaussians=config.max_gaussians)
    return GaussiansConfig(num_points=config.num_gaussians, init_opacity=config.init_opacity,
                           sh_degree=config.sh_degree, lr_means=config.lr_means,
                           lr_scales=config.lr_scales, lr_quats=config.lr_quats, lr_opacities=config.lr_opacities,
                           lr_sh0=config.lr_sh0, lr_shN=config.lr_shN, densify=densify)


# ----- the capture's frame --------------------------------------------------------------------------

def focus_point(cameras: Cameras) -> torch.Tensor:
    """[3] the point nearest (least squares) to every camera's optical axis: what they look at."""
    c2w = cameras.camtoworlds.double()
    centers, axes = c2w[:, :3, 3], F.normalize(c2w[:, :3, 2], dim=-1)  # OpenCV: +z forwards
    projector = torch.eye(3, dtype=torch.float64) - axes[:, :, None] * axes[:, None, :]  # [N, 3, 3]
    return torch.linalg.lstsq(projector.sum(0), (projector @ centers[:, :, None]).sum(0)).solution[:, 0].float()


def normalization(cameras: Cameras) -> tuple[torch.Tensor, float]:
    """(centre [3], scale) with world' = scale * (world - centre): the focus point to the origin and
    the median camera distance to `TARGET_RADIUS`."""
    center = focus_point(cameras) if len(cameras) > 1 else torch.zeros(3)
    distance = float((cameras.centers - center).norm(dim=-1).median())
    return center, TARGET_RADIUS / max(distance, 1e-8)


def transform_cameras(cameras: Cameras, center: torch.Tensor, scale: float) -> Cameras:
    """The same cameras in the frame world' = scale * (world - centre) (rotations unchanged)."""
    rotation = cameras.viewmats[:, :3, :3]
    moved = scale * (cameras.centers - center)
    viewmats = cameras.viewmats.clone()
    viewmats[:, :3, 3] = -(rotation @ moved[:, :, None])[:, :, 0]
    return replace(cameras, viewmats=viewmats)


# ----- initialisation ---------------------------------------------------------------------------------

def project(points: torch.Tensor, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """points [P, 3] -> (pixel coordinates [B, P, 2], camera-space depth [B, P])."""
    camera = points @ cameras.viewmats[:, :3, :3].transpose(1, 2) + cameras.viewmats[:, None, :3, 3]
    depth = camera[..., 2]
    pixels = (camera @ cameras.Ks.transpose(1, 2))[..., :2] / depth.clamp_min(1e-8)[..., None]
    return pixels, depth


def _sample_image(images: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """images [B, C, H, W], pixels [B, P, 2] -> bilinear values [B, P, C]."""
    h, w = images.shape[-2:]
    grid = torch.stack([pixels[..., 0] / w * 2 - 1, pixels[..., 1] / h * 2 - 1], -1)[:, :, None]
    return F.grid_sample(images, grid, align_corners=False, padding_mode="border")[..., 0].transpose(1, 2)


def initial_points(data: CaptureData, count: int, init: str, radius: float, generator: torch.Generator,
                   tries: int = 40) -> tuple[torch.Tensor, torch.Tensor, str]:
    """-> (points [count, 3], colours [count, 3], the init used) in `data`'s frame (see the module
    docstring). Candidates are drawn in the cube around the origin that the nearest camera leaves
    free (after a first round, the box around the points that passed); "hull" / "frustum" fall back
    to the next kind when fewer than a tenth of `count` pass."""
    cameras = data.cameras
    order = {"auto": ["hull", "frustum", "sphere"] if data.alphas is not None else ["frustum", "sphere"],
             "hull": ["hull", "frustum", "sphere"], "frustum": ["frustum", "sphere"], "sphere": ["sphere"]}[init]
    if "hull" in order and data.alphas is None:
        order.remove("hull")
    half = 0.9 * float(cameras.centers.norm(dim=-1).min())
    for kind in order:
        if kind == "sphere":
            direction = F.normalize(torch.randn(count, 3, generator=generator), dim=-1)
            points = direction * radius * torch.rand(count, 1, generator=generator) ** (1 / 3)
            return points, torch.rand(count, 3, generator=generator), kind
        low, high = torch.full((3,), -half), torch.full((3,), half)
        kept = []
        for attempt in range(tries):
            candidates = low + torch.rand(4 * count, 3, generator=generator) * (high - low)
            pixels, depth = project(candidates, cameras)
            inside = (depth > 1e-3) & (pixels[..., 0] >= 0) & (pixels[..., 0] < cameras.width) \
                & (pixels[..., 1] >= 0) & (pixels[..., 1] < cameras.height)
            if kind == "hull":
                inside &= _sample_image(data.alphas, pixels)[..., 0] > 0.5
            kept.append(candidates[inside.all(0)])
            if attempt == 0 and len(kept[0]) >= 8:  # then sample only the box around what passed
                margin = 0.05 * (kept[0].amax(0) - kept[0].amin(0)) + 1e-3 * half
                low, high = kept[0].amin(0) - margin, kept[0].amax(0) + margin
            if sum(len(k) for k in kept) >= count:
                break
        points = torch.cat(kept)[:count]
        if len(points) >= max(1, count // 10):
            pixels, _ = project(points, cameras)
            colors = _sample_image(data.images, pixels).mean(0)
            return points, colors, kind
    raise AssertionError("the sphere init always succeeds")


# ----- loss -----------------------------------------------------------------------------------------------

def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """a, b [B, C, H, W] in [0, 1] -> per-pixel SSIM [B, C, H, W] (Gaussian window, sigma 1.5,
    zero-padded like 3DGS's), constants C1 = 0.01^2, C2 = 0.03^2."""
    channels = a.shape[1]
    kernel = _gaussian_window(window).to(a).expand(channels, 1, window, window)
    blur = lambda x: F.conv2d(x, kernel, padding=window // 2, groups=channels)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def photometric_loss(render: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
                     lambda_dssim: float) -> torch.Tensor:
    """(1 - lambda) L1 + lambda (1 - SSIM) / 2 over the pixels of `mask` [B, 1, H, W] (None: all);
    render, target [B, 3, H, W]."""
    weight = torch.ones_like(render[:, :1]) if mask is None else mask.to(render)
    denominator = (weight.sum() * render.shape[1]).clamp_min(1)
    loss = (1 - lambda_dssim) * ((render - target).abs() * weight).sum() / denominator
    if lambda_dssim:
        loss = loss + lambda_dssim * ((1 - ssim_map(render, target)) / 2 * weight).sum() / denominator
    return loss


def psnr(render: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[B, 3, H, W] pairs in [0, 1] -> PSNR per image [B] in dB, over the pixels of `mask` [B, 1, H, W]
    (None: all)."""
    weight = torch.ones_like(render[:, :1]) if mask is None else mask.to(render)
    squared = ((render.clamp(0, 1) - target) ** 2 * weight).flatten(1).sum(1)
    mse = squared / (weight.flatten(1).sum(1) * render.shape[1]).clamp_min(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def view_psnr(gaussians: Gaussians, views: CaptureData) -> float:
    """Mean PSNR (dB) of white-background renders against the views' images, over their masks."""
    return float(psnr(render_images(gaussians, views.cameras), views.images, views.masks).mean())


@torch.no_grad()
def render_images(gaussians: Gaussians, cameras: Cameras, batch: int = 8) -> torch.Tensor:
    """White-background renders [B, 3, H, W]."""
    return torch.cat([gaussians.render(cameras[list(range(s, min(s + batch, len(cameras))))]).rgb
                      for s in range(0, len(cameras), batch)]).permute(0, 3, 1, 2)


# ----- the run -------------------------------------------------------------------------------------------

@dataclass
class FitResult:
    out: Path
    gaussians: Gaussians
    metrics: dict


def _prompt(dataset: Path) -> str:
    """"a <colour> <kind>" for a micro-world capture (`sds3d.world.capture` records them), else ""."""
    try:
        meta = json.loads(dataset.read_text()).get("sds3d_capture", {})
        return f"a {meta['color']} {meta['kind']}" if isinstance(meta, dict) and "kind" in meta else ""
    except (OSError, ValueError, KeyError, AttributeError):
        return ""


def prepare(config: FitConfig) -> tuple[CaptureData, CaptureData | None, dict]:
    """The training and held-out views (the `test` split, else none), in the fit's frame, and the
    frame's {"center", "scale", "extent"} (extent: 1.1 x the farthest training camera from the
    origin); everything checked before the run folder is touched."""
    validate_fit_config(config)
    data = load_capture(config.dataset)
    test_index = data.splits.get("test", [])
    train_index = data.splits.get("train") or [i for i in range(len(data)) if i not in test_index]
    if not train_index:
        raise InputError(f"{config.dataset}: no training views (every frame is in test_filenames)")
    center, scale = normalization(data.cameras[train_index]) if config.normalize else (torch.zeros(3), 1.0)
    data = replace(data, cameras=transform_cameras(data.cameras, center, scale))
    extent = 1.1 * float(data.cameras[train_index].centers.norm(dim=-1).max())
    frame = {"center": [round(float(v), 7) for v in center], "scale": scale, "extent": round(extent, 4)}
    return data.subset(train_index), data.subset(test_index) if test_index else None, frame


def fit(config: FitConfig, resume: bool = False, progress: bool = True, should_stop=None) -> FitResult:
    """Fits 3D Gaussians to the capture `config.dataset` and writes the run folder `config.out`
    (module docstring). `resume`: continue from the folder's checkpoint (its fit.json must match
    `config` except for RESUMABLE fields). `should_stop()` returning True ends the fit early after a
    checkpoint (its outputs are written; `resume` continues it exactly)."""
    from sds3d.config import save_json
    from sds3d.errors import load_checkpoint
    from sds3d.finite_guard import FiniteGuard, NonFiniteStep
    from sds3d.atomic import atomic_torch_save, atomic_write_json
    from sds3d.generate import GenerateConfig, Timer, finish_run, seed_everything
    from sds3d.particle import Particle
    from sds3d.turntable import image_grid, save_png
    from sds3d.prompts import validate_prompt
    from sds3d.validation import check_writable

    if config.prompt.strip():
        try:
            config = replace(config, prompt=validate_prompt(config.prompt))
        except ValueError as error:
            raise InputError(f"--prompt: {error}") from None
    train, test, frame = prepare(config)
    out = Path(config.out)
    check_writable(out)
    checkpoint_path = out / "checkpoint.pt"
    resuming = resume and checkpoint_path.exists()
    state: dict = {}
    if resuming:
        stored_path = out / "fit.json"
        try:
            stored = json.loads(stored_path.read_text())
        except (OSError, ValueError):
            raise InputError(f"cannot resume {out}: its fit.json is missing or unreadable") from None
        mine = asdict(config)
        differing = [k for k in mine if k not in RESUMABLE and stored.get(k) != mine[k]]
        if differing:
            raise InputError(f"cannot resume {out}: {differing[0]} differs from its fit.json "
                             f"({stored.get(differing[0])!r} -> {mine[differing[0]]!r})")
        state = load_checkpoint(checkpoint_path)
        if "representation" not in state or "step" not in state:
            raise InputError(f"{checkpoint_path}: not an sds3d fit checkpoint")

    dataset_json = Path(config.dataset) / "transforms.json" if Path(config.dataset).is_dir() else Path(config.dataset)
    run_config = GenerateConfig(prompt=config.prompt or _prompt(dataset_json), representation="gaussians",
                                steps=config.steps, seed=config.seed, out=str(out),
                                checkpoint_every=config.checkpoint_every,
                                turntable_frames=config.turntable_frames,
                                turntable_resolution=config.turntable_resolution,
                                gaussians=gaussians_config(config, frame["extent"]))
    generator = seed_everything(config.seed)
    points, colors, init_used = initial_points(train, config.num_gaussians, config.init, config.init_radius,
                                               generator)
    gaussians = Gaussians(points, colors.clamp(0.02, 0.98), config=run_config.gaussians)
    particle = Particle.create(gaussians, 1.0)
    initial_psnr = None if test is None else view_psnr(gaussians, test)
    start_step, elapsed_before, timer = 0, 0.0, Timer()
    if resuming:
        particle.load_state_dict(state, 1.0)
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start_step, elapsed_before, timer.totals = state["step"], state["elapsed"], state["timings"]
        init_used = state.get("init", init_used)
    else:
        replace_earlier_run(out)
    out.mkdir(parents=True, exist_ok=True)
    guard = FiniteGuard(out, state.get("backoffs", 0), start_step if resuming else None)
    started = time.perf_counter()

    def save_checkpoint(step: int) -> None:
        atomic_torch_save({"step": step, **particle.state_dict(), "particles": [], "generator": generator.get_state(),
                            "torch_rng": torch.get_rng_state(), "backoffs": guard.backoffs, "init": init_used,
                            "elapsed": elapsed_before + time.perf_counter() - started, "timings": timer.totals,
                            "frame": frame, "loss": loss_value}, checkpoint_path)
        save_json(run_config, out / "config.json")
        atomic_write_json(asdict(config), out / "fit.json")
        guard.last_checkpoint = step

    decay = math.log(100.0) / max(config.steps, 1)
    bar = tqdm(range(start_step, config.steps), initial=start_step, total=config.steps, disable=not progress,
               desc=f"fit {Path(config.dataset).name[:24]}", dynamic_ncols=True)
    loss_value, steps_done = state.get("loss", float("nan")), start_step
    for step in bar:
        gaussians = particle.representation
        for group in particle.optimizers["means"].param_groups:
            group["lr"] = config.lr_means * math.exp(-decay * step) * 0.5 ** guard.backoffs
        index = torch.randperm(len(train), generator=generator)[:config.views_per_step].tolist()
        cameras = train.cameras[index]
        target = train.images[index]
        background = torch.ones(len(index), 3)
        if train.alphas is not None:  # a random colour behind both, so that empty space stays empty
            background = torch.rand(len(index), 3, generator=generator)
            target = target + (1 - train.alphas[index]) * (background[:, :, None, None] - 1)
        try:
            with timer("render"):
                output = gaussians.render(cameras, background)
                gaussians.before_backward(step, output)
            with timer("backward"):
                for optimizer in particle.optimizers.values():
                    optimizer.zero_grad(set_to_none=True)
                mask = None if train.masks is None else train.masks[index]
                loss = photometric_loss(output.rgb.permute(0, 3, 1, 2), target, mask, config.lambda_dssim)
                loss.backward()
            guard.check_gradients(loss, particle.optimizers)
        except NonFiniteStep as problem:
            guard.back_off(problem, step, list(particle.optimizers.values()))
            bar.write(f"sds3d: step {step + 1}: {problem}; step skipped, learning rates halved", file=sys.stderr)
            steps_done = step + 1
            continue
        with timer("optimizer"):
            for optimizer in particle.optimizers.values():
                optimizer.step()
            gaussians.after_step(step, output, particle.optimizers)
        guard.check_parameters(gaussians, step)
        loss_value = loss.item()
        steps_done = step + 1
        bar.set_postfix(loss=f"{loss_value:.4f}", gaussians=len(gaussians), refresh=False)
        stop = should_stop is not None and should_stop()
        due = config.checkpoint_every and steps_done % config.checkpoint_every == 0
        if stop or due or steps_done == config.steps:
            save_checkpoint(steps_done)
        if stop:
            break
    if guard.last_checkpoint != steps_done:
        save_checkpoint(steps_done)
    bar.close()

    gaussians = particle.representation.eval()
    seconds = elapsed_before + time.perf_counter() - started
    metrics = finish_run([gaussians], run_config, out, seconds, {"loss": loss_value}, timer.totals, steps_done,
                         progress)
    metrics.update({"dataset": str(config.dataset), "train_views": len(train),
                    "test_views": 0 if test is None else len(test),
                    "init": init_used, "frame": frame, "reader": train.reader,
                    "psnr_train": round(view_psnr(gaussians, train), 3)})
    if test is not None:
        renders = render_images(gaussians, test.cameras)
        metrics["psnr_test"] = round(view_psnr(gaussians, test), 3)
        metrics["psnr_test_initial"] = round(initial_psnr, 3)
        pair = torch.cat([test.images[:8], renders[:8].clamp(0, 1)])
        save_png(image_grid((pair.permute(0, 2, 3, 1) * 255 + 0.5).to(torch.uint8).numpy(), columns=min(8, len(test))),
                 out / "fit_views.png")
    atomic_write_json(metrics, out / "metrics.json")
    return FitResult(out=out, gaussians=gaussians, metrics=metrics)


__all__ = ["FitConfig", "FitResult", "fit", "prepare", "initial_points", "photometric_loss", "ssim_map", "psnr",
           "view_psnr", "focus_point", "normalization", "transform_cameras", "project", "INITS"]
