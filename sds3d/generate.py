"""The generation loop: render random views, score them with a guidance variant, step, repeat.

`generate(config)` writes a run directory:
    config.json         resolved config (re-run it as-is with `sds3d generate --config`)
    checkpoint.pt       atomic, every `checkpoint_every` steps; `resume=True` continues from it
    previews/           step_XXXXX.png grids of fixed views
    asset.ply           the 3D Gaussians (standard 3DGS layout)
    turntable.gif       24 views around the object
    preview.png         8 of those views in a grid
    metrics.json        time, steps, final loss, where time went, evaluator scores when applicable
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .background import Background
from .cameras import CameraSampler, turntable_cameras
from .config import save_json
from .prompts import PromptConfig, PromptProcessor, validate_prompt
from .representations import Gaussians, GaussiansConfig
from .guidance.cds import CDSConfig
from .guidance.cfd import CFDConfig
from .guidance.csd import CSDConfig
from .guidance.dsd import DSDConfig
from .guidance.ism import ISMConfig
from .guidance.nfsd import NFSDConfig
from .guidance.sdi import SDIConfig
from .guidance.sds import SDSConfig
from .guidance.tsm import TSMConfig
from .guidance.vsd import VSDConfig
from .turntable import image_grid, render_turntable, save_animation, save_png

REPRESENTATIONS = ("gaussians",)


@dataclass
class CameraConfig:
    elevation_range: tuple[float, float] = (-10.0, 45.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    radius_range: tuple[float, float] = (2.2, 2.8)
    fovy_range: tuple[float, float] = (35.0, 45.0)


@dataclass
class GenerateConfig:
    prompt: str = "a red mug"
    negative_prompt: str = ""
    representation: str = "gaussians"
    guidance: str = "sds"
    prior: str = "embedded"  # or a diffusers Stable Diffusion folder / hub id
    steps: int = 600
    seed: int = 0
    views_per_step: int = 4
    resolution: int = 32  # render size during distillation
    background: str = "white"  # white | random | learned
    view_dependent: bool = True
    device: str = "auto"
    out: str = "runs/latest"
    preview_every: int = 100
    checkpoint_every: int = 50
    turntable_frames: int = 24
    turntable_resolution: int = 128
    camera: CameraConfig = field(default_factory=CameraConfig)
    gaussians: GaussiansConfig = field(default_factory=GaussiansConfig)
    # one section per guidance variant; `guidance` picks which one is used
    sds: SDSConfig = field(default_factory=SDSConfig)
    nfsd: NFSDConfig = field(default_factory=NFSDConfig)
    csd: CSDConfig = field(default_factory=CSDConfig)
    sdi: SDIConfig = field(default_factory=SDIConfig)
    ism: ISMConfig = field(default_factory=ISMConfig)
    tsm: TSMConfig = field(default_factory=TSMConfig)
    cds: CDSConfig = field(default_factory=CDSConfig)
    dsd: DSDConfig = field(default_factory=DSDConfig)
    vsd: VSDConfig = field(default_factory=VSDConfig)
    cfd: CFDConfig = field(default_factory=CFDConfig)


@dataclass
class RunResult:
    out: Path
    representation: Gaussians
    metrics: dict


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def build_representation(config: GenerateConfig, generator: torch.Generator) -> Gaussians:
    if config.representation not in REPRESENTATIONS:
        raise ValueError(f"unknown representation {config.representation!r}; "
                         f"choose one of {', '.join(REPRESENTATIONS)}")
    return Gaussians.random_in_sphere(config.gaussians, generator)


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Timer:
    """Accumulates wall time per phase: `with timer("render"): ...`."""

    def __init__(self):
        self.totals: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Phase:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.totals[name] = timer.totals.get(name, 0.0) + time.perf_counter() - self.start

        return _Phase()


def generate(config: GenerateConfig, prior=None, guidance=None, resume: bool = False, progress: bool = True,
             callback=None, should_stop=None) -> RunResult:
    """Run score distillation. `prior` / `guidance` objects may be passed instead of being built from
    the config (tests, notebooks). `callback(step, logs, output)` is called every step;
    `should_stop()` returning True ends the run early after a checkpoint (the result is kept)."""
    from .guidance.registry import build_guidance, load_prior, resolve_device

    config.prompt = validate_prompt(config.prompt)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(config, out / "config.json")
    device = resolve_device(config.device)
    generator = seed_everything(config.seed)

    prior = prior if prior is not None else load_prior(config.prior, device)
    representation = build_representation(config, generator).to(device)
    if guidance is None:
        guidance = build_guidance(config.guidance, prior, getattr(config, config.guidance, None), config.steps)
    prompts = PromptProcessor(prior, PromptConfig(config.prompt, config.negative_prompt, config.view_dependent))
    sampler = CameraSampler(width=config.resolution, height=config.resolution, **vars(config.camera))
    background = Background(config.background).to(device)
    optimizers = representation.make_optimizers()
    if config.background == "learned":
        optimizers["background"] = torch.optim.Adam(background.parameters(), lr=1e-3)

    checkpoint_path = out / "checkpoint.pt"
    start_step, elapsed_before, timer = 0, 0.0, Timer()
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        representation.load_state_dict(state["representation"])
        optimizers = representation.make_optimizers()
        if config.background == "learned":
            optimizers["background"] = torch.optim.Adam(background.parameters(), lr=1e-3)
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        representation.densifier.load_state_dict(state["densifier"])
        background.load_state_dict(state["background"])
        guidance.load_state_dict(state["guidance"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start_step, elapsed_before, timer.totals = state["step"], state["elapsed"], state["timings"]

    def save_checkpoint(step: int) -> None:
        _atomic_torch_save({
            "step": step, "representation": representation.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
            "densifier": representation.densifier.state_dict(), "background": background.state_dict(),
            "guidance": guidance.state_dict(), "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "elapsed": elapsed_before + time.perf_counter() - started, "timings": timer.totals}, checkpoint_path)

    preview_cameras = turntable_cameras(4, elevation=15.0, width=64)
    started = time.perf_counter()
    logs: dict = {}
    bar = tqdm(range(start_step, config.steps), initial=start_step, total=config.steps, disable=not progress,
               desc=config.prompt[:30], dynamic_ncols=True)
    steps_done = start_step
    for step in bar:
        with timer("render"):
            cameras = sampler.sample(config.views_per_step, generator).to(device)
            output = representation.render(cameras, background(cameras, generator).to(device))
            representation.before_backward(step, output)
        with timer("prior"):
            batch = prompts(cameras)
            guided = guidance(output, batch, cameras, step, generator)
        with timer("backward"):
            for optimizer in optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            guided.loss.backward()
        with timer("optimizer"):
            for optimizer in optimizers.values():
                optimizer.step()
            representation.after_step(step, output, optimizers)
        logs = {"loss": guided.loss.item(), **guided.logs, "gaussians": len(representation)}
        bar.set_postfix(loss=f"{logs['loss']:.4f}", n=logs["gaussians"], refresh=False)
        if callback is not None:
            callback(step, logs, output)
        done = steps_done = step + 1
        if config.preview_every and (done % config.preview_every == 0 or done == config.steps):
            _save_preview(representation, preview_cameras, out / "previews" / f"step_{done:05d}.png")
        stop = should_stop is not None and should_stop()
        if stop or (config.checkpoint_every and done % config.checkpoint_every == 0) or done == config.steps:
            save_checkpoint(done)
        if stop:
            break
    bar.close()

    seconds = elapsed_before + time.perf_counter() - started
    metrics = finish_run(representation, config, out, seconds, logs, timer.totals, steps_done)
    return RunResult(out=out, representation=representation, metrics=metrics)


@torch.no_grad()
def _save_preview(representation, cameras, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = representation.render(cameras).rgb.clamp(0, 1)
    save_png(image_grid((rgb * 255 + 0.5).to(torch.uint8).cpu().numpy(), columns=len(cameras)), path)


def finish_run(representation, config: GenerateConfig, out: Path, seconds: float, logs: dict, timings: dict,
               steps_done: int) -> dict:
    """Writes the asset, turntable, preview grid and metrics.json; returns the metrics."""
    representation.save_ply(out / "asset.ply")
    frames = render_turntable(representation, config.turntable_frames, config.turntable_resolution)
    save_animation(frames, out / "turntable.gif")
    save_png(image_grid(frames[:: max(1, len(frames) // 8)][:8], columns=4), out / "preview.png")
    total_phase = sum(timings.values()) or 1.0
    metrics = {
        "prompt": config.prompt, "steps": steps_done, "seconds": round(seconds, 2),
        "final_loss": logs.get("loss"), "gaussians": len(representation),
        "time_breakdown": {k: round(v / total_phase, 3) for k, v in sorted(timings.items())},
        "seconds_per_step": round(total_phase / max(steps_done, 1), 4),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
