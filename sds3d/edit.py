"""The edit loop: move a finished asset from its source prompt towards a target prompt with an editing
score (PDS, DDS, Stable Score Distillation or SDS), optionally only inside a region.

`edit(source, prompt, ...)` writes a new run directory, readable by `sds3d render / export / eval`:
    config.json         the GenerateConfig of the edited asset (its prompt is the target prompt)
    edit.json           the EditConfig (resume refuses another one)
    checkpoint.pt       atomic, every `checkpoint_every` steps: the asset, its optimisers, the source
                        asset, the region mask and the random states; `resume=True` continues exactly
    metrics.csv         one row per step; loss.png at the end
    asset.ply | .glb    the edited asset, turntable.gif and preview.png, as `sds3d.generate` writes them
    before_after.gif    the source's and the edited asset's turntables side by side
    before_after.png    8 views of each: the source on the top row, the edit below
    metrics.json        seconds, Chamfer distance to the source shape, evaluator scores of the target
                        prompt (micro-world prompts), PSNR outside the region (region edits)

Each step renders random views of the edited asset and of the source from the same cameras; the
score compares them under the target and the source prompts. With a region (a per-point mask [N] or
a text query for `sds3d.features.select`), the score's gradient reaches the render only through the
rendered mask, a preservation loss keeps the rest of the render at the source, and every parameter
of an unselected Gaussian keeps its exact value. Gaussians are edited without densification (the
point count stays N, so masks stay valid); NeRF and DMTet assets can be edited globally.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .cameras import CameraSampler
from .atomic import atomic_torch_save
from .config import load_json, save_json
from .errors import InputError, load_checkpoint
from .finite_guard import FiniteGuard, NonFiniteStep
from .generate import (CameraConfig, GenerateConfig, Timer, eight_frames, load_run, load_weights,
                       save_outputs, seed_everything)
from .monitor import RunMonitor
from .particle import Particle
from .prompts import PromptConfig, PromptProcessor, validate_prompt
from .run_folder import replace_earlier_run
from .turntable import image_grid, render_turntable, save_animation, save_png
from .validation import check_field, check_finite_weights, check_writable, fields
from sds3d.guidance.edit.base import EDIT_SCORES, build_edit_score
from sds3d.guidance.edit.dds import DDSConfig
from sds3d.guidance.edit.pds import PDSConfig
from sds3d.guidance.edit.region import (check_point_mask, freeze_unselected, preservation_loss, render_point_mask,
                                        restrict_to_region)
from sds3d.guidance.edit.sds import EditSDSConfig
from sds3d.guidance.edit.ssd import SSDConfig
from sds3d.guidance.priors.stable_diffusion import DiffusersUNetPrior
from sds3d.representations import Gaussians, Representation
from sds3d.scene.load import load_asset


@dataclass
class EditConfig:
    prompt: str = "a blue mug"  # the target prompt
    source_prompt: str = ""  # "" = the source run's own prompt
    guidance: str = "pds"  # pds | dds | ssd | sds
    region: str = ""  # a text query for sds3d.features.select ("" = the whole asset, or a mask passed to `edit`)
    steps: int = 200  # a colour edit on the embedded prior is done in 100-200 (docs/editing.md)
    seed: int = 0
    views_per_step: int = 4
    resolution: int = 32  # render size during editing
    # Learning rates: the asset's own, times lr_scale, times color_lr_scale on the colour groups and
    # geometry_lr_scale on those that move geometry (GEOMETRY_GROUPS; 0 edits colour only). Tuned on the
    # embedded prior ("a red mug" -> "a blue mug", 100-200 steps): colour at 3x its generation rate turns the
    # mug blue within 100 steps; geometry at 5x (lr_scale 5) tears the surface apart with every score.
    lr_scale: float = 1.0
    color_lr_scale: float = 3.0
    geometry_lr_scale: float = 1.0
    preserve_weight: float = 1.0  # region edits: weight of the preservation loss outside the region
    view_dependent: bool = True
    prior: str = "embedded"
    prior_precision: str = "fp32"  # auto | fp32 | bf16 (prior UNet under CPU autocast); auto = bf16 on AVX512-BF16/AMX
    device: str = "auto"
    out: str = "runs/edit"
    checkpoint_every: int = 50
    turntable_frames: int = 24
    turntable_resolution: int = 128
    turntable_format: str = "gif"
    camera: CameraConfig = field(default_factory=CameraConfig)
    pds: PDSConfig = field(default_factory=PDSConfig)
    dds: DDSConfig = field(default_factory=DDSConfig)
    ssd: SSDConfig = field(default_factory=SSDConfig)
    sds: EditSDSConfig = field(default_factory=EditSDSConfig)


@dataclass
class EditResult:
    out: Path
    representation: Representation  # the edited asset
    source: Representation  # the asset before the edit
    metrics: dict
    point_mask: torch.Tensor | None  # [N] bool, the region's Gaussians


# optimiser groups that move or reshape the surface (Gaussians, NeRF, DMTet; the NeRF's hash encoding, shared
# by density and colour, counts as geometry); the others hold colour
GEOMETRY_GROUPS = ("means", "scales", "quats", "opacities", "encoding", "density_mlp", "sdf", "deform")

# fields a resumed edit may change: its length and where and how often it writes
RESUMABLE = ("steps", "out", "device", "checkpoint_every", "turntable_frames", "turntable_resolution")


def load_source(source) -> tuple[GenerateConfig | None, Representation]:
    """A run directory, an asset file (`load_asset`: a 3DGS .ply, or a .glb / .gltf / .obj mesh as
    Gaussians on its surface, sampled with seed 0) or a Representation -> (its GenerateConfig or None,
    a copy of the asset to edit). InputError (one line) for anything else."""
    if isinstance(source, Representation):
        return None, copy.deepcopy(source).eval()
    path = Path(source)
    if path.is_file():
        return None, load_asset(path, generator=torch.Generator().manual_seed(0)).eval()
    if not path.exists():
        raise InputError(f"{path}: no such run directory or asset file")
    return load_run(path)


def validate_edit_config(config: EditConfig) -> None:
    """Types and ranges of every field, the guidance name and the prompts; InputError at the first problem."""
    for path, value, hint in fields(config):
        if path not in ("prompt", "source_prompt", "region"):
            check_field(path, value, hint)
    if config.guidance not in EDIT_SCORES:
        raise InputError(f"unknown editing guidance {config.guidance!r}; choose one of {', '.join(EDIT_SCORES)}")
    for name in ("prompt", "source_prompt", "region"):
        value = getattr(config, name)
        if name == "prompt" and not " ".join(value.split()):
            raise InputError("the edit prompt is empty; give the target text, such as \"a blue mug\"")
        if len(value) > 300:
            raise InputError(f"{name} is {len(value)} characters long; the limit is 300")
    for name, low in (("lr_scale", 0.0), ("color_lr_scale", 0.0), ("geometry_lr_scale", 0.0), ("preserve_weight", 0.0)):
        if not (math.isfinite(getattr(config, name)) and getattr(config, name) >= low):
            raise InputError(f"{name} must be a finite number >= {low}, got {getattr(config, name)}")


def _generate_config(config: EditConfig, source_config: GenerateConfig | None,
                     source: Representation) -> GenerateConfig:
    """The edited asset's GenerateConfig (what `load_run` needs to read it back): the source run's, or one
    describing `source`, with the target prompt and without densification."""
    if source_config is None:
        kind = {"Gaussians": "gaussians", "NeRF": "nerf", "DMTet": "mesh"}.get(type(source).__name__)
        if kind is None:
            raise InputError(f"cannot edit a {type(source).__name__}; give Gaussians, a NeRF or a DMTet")
        source_config = GenerateConfig(representation=kind)
        setattr(source_config, source_config.representation, copy.deepcopy(source.config))
    generated = replace(source_config, prompt=config.prompt, out=config.out, init_from="", seed=config.seed,
                        steps=config.steps, resolution=config.resolution, prior=config.prior,
                        turntable_frames=config.turntable_frames, turntable_resolution=config.turntable_resolution,
                        turntable_format=config.turntable_format)
    generated.gaussians = replace(generated.gaussians, densify=replace(generated.gaussians.densify, enabled=False))
    return generated


def _without_densification(representation: Representation) -> None:
    if isinstance(representation, Gaussians):
        from sds3d.representations.gaussian_densification import GaussianDensifier

        representation.config = replace(representation.config,
                                        densify=replace(representation.config.densify, enabled=False))
        representation.densifier = GaussianDensifier(representation.config.densify)


def _select_by_text(source, representation: Representation, query: str, context: str) -> torch.Tensor:
    """The points of `representation` that `query` selects, by the asset's own feature field, else the
    newest one saved beside the run or file (`sds3d.features.assets`), `context` (the source prompt)
    saying what the object is. A mesh file is edited as Gaussians sampled on its surface, while its
    saved field lives on the mesh: that surface field is queried at the Gaussians' centres."""
    from sds3d.features.assets import saved_fields
    from sds3d.features.field import ATTRIBUTE, load_field
    from sds3d.features.select import select_points
    from sds3d.representations.mesh import Mesh
    from sds3d.scene.load import read_asset

    found = [] if isinstance(source, Representation) or ATTRIBUTE in representation.__dict__ else saved_fields(source)
    if found and Path(source).is_file() and isinstance(stored := read_asset(source), Mesh):
        load_field(found[0], stored)
        return select_points(stored, query, at=representation.means.detach(), context=context)
    if found:
        load_field(found[0], representation)
    return select_points(representation, query, context=context)


def _select(source, representation: Representation, region_mask, query: str, context: str) -> torch.Tensor | None:
    if region_mask is not None and query:
        raise InputError("give either a region mask or a region query, not both")
    if region_mask is None and not query:
        return None
    if not isinstance(representation, Gaussians):
        raise InputError(f"region edits need 3D Gaussians; this asset is a {type(representation).__name__} "
                         f"(edit it without a region)")
    if query:
        region_mask = _select_by_text(source, representation, query, context)
    return check_point_mask(region_mask, len(representation))


def _check_resume(config: EditConfig) -> dict:
    out = Path(config.out)
    if not (out / "edit.json").is_file():
        raise InputError(f"cannot resume {out}: it has checkpoint.pt but no edit.json; start a new output folder")
    stored = load_json(EditConfig, out / "edit.json")
    new, old = ({p: v for p, v, _ in fields(c)} for c in (config, stored))
    differing = [path for path in new if path not in RESUMABLE and new[path] != old[path]]
    if differing:
        shown = ", ".join(f"{p} ({old[p]!r} -> {new[p]!r})"[:80] for p in differing[:3])
        raise InputError(f"cannot resume {out}: the edit differs from its edit.json in {shown}; resume with the "
                         f"same settings or choose another --out")
    state = load_checkpoint(out / "checkpoint.pt")
    missing = [key for key in ("step", "representation", "source", "optimizers", "generator", "torch_rng")
               if key not in state]
    if missing:
        raise InputError(f"{out / 'checkpoint.pt'}: not an sds3d edit checkpoint (no {', '.join(missing)})")
    check_finite_weights(state["representation"], out / "checkpoint.pt")
    if not isinstance(state["step"], int) or not 0 <= state["step"] <= config.steps:
        raise InputError(f"{out / 'checkpoint.pt'} is at step {state['step']}, beyond steps={config.steps}; "
                         f"resume with at least that many steps")
    return state


def edit(source, prompt: str | None = None, source_prompt: str | None = None, region_mask=None,
         region: str | None = None, guidance: str | None = None, steps: int | None = None, out: str | None = None,
         config: EditConfig | None = None, prior=None, resume: bool = False, progress: bool = True,
         evaluate: bool = True, should_stop=None) -> EditResult:
    """Edit `source` (a run directory, a 3DGS .ply, a mesh file or a Representation) towards `prompt`.

    Keyword arguments override the fields of `config` (an EditConfig; defaults otherwise).
    `region_mask` is a bool tensor [N], one entry per Gaussian; `region` a text query answered by
    `sds3d.features.select.select_points`. `prior` may be passed instead of loaded (tests,
    notebooks); `evaluate` adds evaluator scores of micro-world prompts to the metrics;
    `should_stop()` returning True ends the edit after a checkpoint (resume it later)."""
    from sds3d.guidance.priors.prior import resolve_device
    from sds3d.guidance.registry import check_prior_is, load_prior

    config = copy.deepcopy(config) if config is not None else EditConfig()
    for name, value in (("prompt", prompt), ("source_prompt", source_prompt), ("region", region),
                        ("guidance", guidance), ("steps", steps), ("out", out)):
        if value is not None:
            setattr(config, name, value)
    # Everything is checked before anything is written.
    validate_edit_config(config)
    config.prompt = validate_prompt(config.prompt)
    if not isinstance(source, Representation) and Path(source).resolve() == Path(config.out).resolve():
        raise InputError(f"out {config.out} is the source run itself; choose a new folder for the edit")
    source_config, source_asset = load_source(source)
    if not config.source_prompt:
        if source_config is None:
            raise InputError("no source prompt: this asset has no run config.json; give --source-prompt")
        config.source_prompt = source_config.prompt
    config.source_prompt = validate_prompt(config.source_prompt)
    out_dir = Path(config.out)
    checkpoint_path = out_dir / "checkpoint.pt"
    resuming = resume and checkpoint_path.exists()
    state = _check_resume(config) if resuming else {}
    check_writable(out_dir)
    try:
        device = resolve_device(config.device)
    except (ValueError, RuntimeError) as error:
        raise InputError(str(error).splitlines()[0]) from None
    generated_config = _generate_config(config, source_config, source_asset)

    _without_densification(source_asset)
    if resuming:
        load_weights(source_asset, state["source"], checkpoint_path, generated_config.representation)
        point_mask = state.get("point_mask")
    else:
        point_mask = _select(source, source_asset, region_mask, config.region, config.source_prompt)
    source_asset = source_asset.to(device).eval()
    for param in source_asset.parameters():
        param.requires_grad_(False)
    asset = copy.deepcopy(source_asset)
    for param in asset.parameters():
        param.requires_grad_(True)
    generator = seed_everything(config.seed)
    if prior is not None:
        check_prior_is(prior, config.prior)
    prior = prior if prior is not None else load_prior(config.prior, device)
    if isinstance(prior, DiffusersUNetPrior):
        prior.set_precision(config.prior_precision)
    score = build_edit_score(config.guidance, prior, getattr(config, config.guidance), config.steps)
    particle = Particle.create(asset, config.lr_scale)
    for name, optimizer in particle.optimizers.items():  # restored from the checkpoint when resuming
        for group in optimizer.param_groups:
            group["lr"] *= config.geometry_lr_scale if name in GEOMETRY_GROUPS else config.color_lr_scale
    target_prompts = PromptProcessor(prior, PromptConfig(config.prompt, "", config.view_dependent))
    source_prompts = PromptProcessor(prior, PromptConfig(config.source_prompt, "", config.view_dependent))
    sampler = CameraSampler(width=config.resolution, height=config.resolution, **vars(config.camera))

    start_step, elapsed_before, timer = 0, 0.0, Timer()
    if resuming:
        particle.load_state_dict(state, config.lr_scale)
        score.load_state_dict(state.get("guidance", {}))
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start_step, elapsed_before, timer.totals = state["step"], state["elapsed"], state["timings"]
    hooks = freeze_unselected(asset, point_mask) if point_mask is not None else []
    if not resuming:
        replace_earlier_run(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    guard = FiniteGuard(out_dir, state.get("backoffs", 0), start_step if resuming else None)
    started = time.perf_counter()

    def save_checkpoint(step: int) -> None:
        atomic_torch_save({
            "step": step, **particle.state_dict(), "source": source_asset.state_dict(), "point_mask": point_mask,
            "guidance": score.state_dict(), "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "backoffs": guard.backoffs, "elapsed": elapsed_before + time.perf_counter() - started,
            "timings": timer.totals}, checkpoint_path)
        save_json(generated_config, out_dir / "config.json")
        save_json(config, out_dir / "edit.json")
        guard.last_checkpoint = step

    def optimise(step: int) -> dict:
        with timer("render"):
            cameras = sampler.sample(config.views_per_step, generator).to(device)
            output = asset.render(cameras)
            asset.before_backward(step, output)
            with torch.no_grad():
                before = source_asset.render(cameras)
            extra = None
            if point_mask is not None:
                soft = render_point_mask(asset, cameras, point_mask)
                extra = preservation_loss(output.rgb, before.rgb, soft, config.preserve_weight)
                output = replace(output, rgb=restrict_to_region(output.rgb, soft))
        with timer("prior"):
            guided = score(output, before, target_prompts(cameras), source_prompts(cameras), step, generator)
        with timer("backward"):
            for optimizer in particle.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            loss = guided.loss if extra is None else guided.loss + extra
            if output.meta and "regularizer_loss" in output.meta:
                loss = loss + output.meta["regularizer_loss"]
            loss.backward()
        guard.check_gradients(loss, particle.optimizers)
        with timer("optimizer"):
            for optimizer in particle.optimizers.values():
                optimizer.step()
            asset.after_step(step, output, particle.optimizers)
        guard.check_parameters(asset, step)
        logs = {"loss": guided.loss.item(), **guided.logs}
        if extra is not None:
            logs["preserve"] = extra.item()
        return logs

    bar = tqdm(range(start_step, config.steps), initial=start_step, total=config.steps, disable=not progress,
               desc=f"edit: {config.prompt[:24]}", dynamic_ncols=True)
    monitor = RunMonitor(out_dir, start_step)
    steps_done, logs = start_step, {}
    try:
        for step in bar:
            try:
                logs = optimise(step)
            except NonFiniteStep as problem:
                guard.back_off(problem, step, list(particle.optimizers.values()))
                bar.write(f"sds3d: step {step + 1}: {problem}; step skipped, learning rates halved", file=sys.stderr)
                steps_done = step + 1
                continue
            monitor.log(step + 1, elapsed_before + time.perf_counter() - started, logs)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)
            done = steps_done = step + 1
            stop = should_stop is not None and should_stop()
            if stop or (config.checkpoint_every and done % config.checkpoint_every == 0) or done == config.steps:
                save_checkpoint(done)
            if stop:
                break
        if guard.last_checkpoint != steps_done:
            save_checkpoint(steps_done)
    finally:
        for hook in hooks:
            hook.remove()
        bar.close()
        monitor.close()
    seconds = elapsed_before + time.perf_counter() - started
    asset.eval()
    metrics = finish_edit(asset, source_asset, config, generated_config, out_dir, seconds, steps_done, logs,
                          point_mask, evaluate, progress)
    return EditResult(out=out_dir, representation=asset, source=source_asset, metrics=metrics, point_mask=point_mask)


@torch.no_grad()
def compare_to_source(asset: Representation, source: Representation, point_mask: torch.Tensor | None) -> dict:
    """Chamfer distance between the surfaces seen by the evaluation cameras (back-projected depth), and
    for region edits the PSNR of the renders outside the region (mask < 0.5) against the source's."""
    from .evaluate import backproject_depth, chamfer_distance, evaluation_cameras

    cameras = evaluation_cameras()
    after, before = asset.render(cameras), source.render(cameras)
    scores = {"chamfer_to_source": chamfer_distance(backproject_depth(after, cameras),
                                                    backproject_depth(before, cameras))}
    if point_mask is not None:
        outside = (render_point_mask(source, cameras, point_mask) < 0.5).expand_as(after.rgb)
        mse = ((after.rgb.clamp(0, 1) - before.rgb.clamp(0, 1))[outside] ** 2).mean().item()
        scores["outside_psnr_db"] = float("inf") if mse == 0 else -10 * math.log10(mse)
        scores["selected_gaussians"] = int(point_mask.sum())
    return scores


def finish_edit(asset, source, config: EditConfig, generated_config: GenerateConfig, out: Path, seconds: float,
                steps_done: int, logs: dict, point_mask, evaluate: bool, progress: bool = False) -> dict:
    """Writes the asset, turntable and preview (`save_outputs`), the before/after pictures and metrics.json."""
    asset_path, after = save_outputs(asset, generated_config, out, progress)
    before = render_turntable(source, config.turntable_frames, config.turntable_resolution)
    save_animation(np.concatenate([before, after], axis=2), out / f"before_after.{config.turntable_format}")
    save_png(image_grid(np.concatenate([eight_frames(before), eight_frames(after)]), columns=len(eight_frames(after))),
             out / "before_after.png")
    metrics = {"prompt": config.prompt, "source_prompt": config.source_prompt, "guidance": config.guidance,
               "steps": steps_done, "seconds": round(seconds, 2), "final_loss": logs.get("loss"),
               "asset": asset_path.name, **asset.stats(), **compare_to_source(asset, source, point_mask)}
    if evaluate:
        from .evaluate import evaluate_asset

        scores = evaluate_asset(asset, config.prompt, geometry=False)
        metrics.update({key: scores[key] for key in ("kind", "color", "kind_acc", "color_acc") if key in scores})
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2))
    os.replace(tmp, out / "metrics.json")
    return metrics
