"""The generation loop: render random views, score them with a guidance variant, step, repeat.

`generate(config)` writes a run directory:
    config.json         resolved config (re-run it as-is with `sds3d generate --config`)
    checkpoint.pt       atomic, every `checkpoint_every` steps; `resume=True` continues from it
    previews/           step_XXXXX.png grids of fixed views (one row per particle)
    metrics.csv         one row per step (loss, seconds, guidance logs), written as the run goes
    loss.png            loss and seconds per step against the step; tensorboard/ with `tensorboard`
    asset.ply | .glb    the asset: 3D Gaussians (standard 3DGS layout), or for NeRF and DMTet a
                        mesh with a baked UV texture
    turntable.gif       24 views around the object (turntable.mp4 with turntable_format "mp4")
    preview.png         8 of those views in a grid
    metrics.json        time, steps, final loss, where time went, evaluator scores when applicable;
                        with retrieval (`retrieval.library`) what was retrieved, with scores, and the
                        adaptation's cost under "retrieval"
With several VSD particles (`vsd.particles` = n), the files above hold particle 0 and
    particle_<i>/       asset, turntable.gif and preview.png of particle i (1 <= i < n)
    particles.png       8 turntable views per particle, one row each
"""

from __future__ import annotations

import random
import sys
import time
import warnings
from dataclasses import dataclass, field, make_dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .atomic import atomic_torch_save, atomic_write_json
from .background import Background
from .cameras import CameraSampler, turntable_cameras
from .config import save_json
from .errors import InputError, load_checkpoint
from .export import save_asset
from .finite_guard import FiniteGuard, NonFiniteStep
from .monitor import RunMonitor
from .particle import Particle, particle_count
from .prompts import PromptConfig, PromptProcessor, validate_prompt
from .scope import warn_outside_world
from sds3d.representations import Representation
from sds3d.representations.registry import (ALIASES, REPRESENTATIONS, canonical_name, create_representation,
                                            representation_entry, run_section)
from sds3d.cuda.build import build_in_background
from sds3d.guidance.priors.stable_diffusion import DiffusersUNetPrior
from sds3d.guidance.registry import guidance_configs
from sds3d.retrieval.run import RetrievalConfig
from .run_folder import replace_earlier_run
from .turntable import image_grid, render_turntable, save_animation, save_png
from .validation import check_finite_weights, check_resume, check_writable, validate_config

@dataclass
class CameraConfig:
    elevation_range: tuple[float, float] = (-10.0, 45.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    radius_range: tuple[float, float] = (2.2, 2.8)
    fovy_range: tuple[float, float] = (35.0, 45.0)


@dataclass
class RunSettings:
    """A run's settings apart from the sections of the representations and guidance variants."""

    prompt: str = "a red mug"
    negative_prompt: str = ""
    representation: str = "gaussians"  # a name of representations.registry.REPRESENTATIONS (or an alias)
    init_from: str = ""  # a finished run directory whose asset initialises this one (coarse -> fine)
    guidance: str = "sds"
    # prior, steps, views_per_step: None takes the representation's (`RepresentationEntry.run_defaults`)
    prior: str | None = None  # embedded | embedded-v2 | embedded-v3 | a Stable Diffusion, DeepFloyd IF or prior folder / hub id
    prior_precision: str = "fp32"  # auto | fp32 | bf16 (prior UNet under CPU autocast); auto = bf16 on AVX512-BF16/AMX
    prior_batch_threads: bool = True  # on the CPU, the prior's batch in slices run side by side, one core each
    steps: int | None = None
    seed: int = 0
    views_per_step: int | None = None
    resolution: int = 32  # render size during distillation
    background: str = "white"  # white | random | learned
    view_dependent: bool = True
    device: str = "auto"
    out: str = "runs/latest"
    preview_every: int = 100
    checkpoint_every: int = 50
    turntable_frames: int = 24
    turntable_resolution: int = 128
    turntable_format: str = "gif"  # gif | mp4 (H.264 through imageio-ffmpeg)
    camera: CameraConfig = field(default_factory=CameraConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)  # library "" = no retrieval

    def __post_init__(self):
        self.representation = canonical_name(self.representation)  # "mesh" (older runs) -> "dmtet"
        for name, value in _run_defaults(self.representation).items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def with_representation(self, name: str):
        """This config for representation `name`; the settings that hold the old representation's run
        defaults (prior, steps, views_per_step) take the new one's, settings chosen otherwise stay."""
        old, new = _run_defaults(self.representation), _run_defaults(canonical_name(name))
        moved = {key: value for key, value in new.items() if getattr(self, key) == old.get(key)}
        return replace(self, representation=name, **moved)


def _run_defaults(representation: str) -> dict:
    """{setting: value} a representation is tuned with (`RepresentationEntry.run_defaults`); {} for an
    unknown name, which validation refuses with the choices."""
    entry = REPRESENTATIONS.get(representation)
    return dict(entry.run_defaults) if entry else {}


def _with_sections(settings: type) -> type:
    """A run's config: `settings` plus one section per registered representation, then one per guidance variant, each
    named like it; `representation` and `guidance` pick the sections a run uses. Older names of a
    section (`FIELD_ALIASES`, "mesh" for "dmtet") are still read by `sds3d.config`."""
    sections = {**{name: entry.config for name, entry in REPRESENTATIONS.items()}, **guidance_configs()}
    return make_dataclass("GenerateConfig", [(name, config, field(default_factory=config))
                                             for name, config in sections.items()],
                          bases=(settings,), namespace={"FIELD_ALIASES": ALIASES, "__module__": __name__,
                                                                 "__doc__": _with_sections.__doc__})


GenerateConfig = _with_sections(RunSettings)


@dataclass
class RunResult:
    out: Path
    representation: Representation  # particle 0
    metrics: dict
    particles: list[Representation]  # every particle, particle 0 first


def make_guidance(config: GenerateConfig, prior):
    """The run's guidance variant from its config section; a section whose `seed` is None (CDS's
    fixed noise, DSD's z_T) takes the run's seed, so different seeds follow different paths."""
    from sds3d.guidance.registry import build_guidance

    section = getattr(config, config.guidance, None)
    if getattr(section, "seed", 0) is None:
        section = replace(section, seed=config.seed)
    return build_guidance(config.guidance, prior, section, config.steps)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def build_representation(config: GenerateConfig, generator: torch.Generator, initialise: bool = True) -> Representation:
    """The run's representation from its config section: from `config.init_from`'s asset when set (and
    `initialise`), else freshly created (Gaussians in a ball, NeRF and DMTet as a sphere-like blob)."""
    name, section = canonical_name(config.representation), run_section(config)
    if config.init_from and initialise:
        from sds3d.representations.convert import initialise_from

        return initialise_from(load_run(config.init_from)[1], name, section, generator)
    return create_representation(name, section, generator)


class StoppedRunWarning(UserWarning):
    """`load_run` of a run that stopped before its last step: its last checkpoint is what loads."""


def load_run(run_dir: str | Path, particle: int = 0) -> tuple[GenerateConfig, Representation]:
    """A finished (or stopped) run's config and representation (particle `particle` of a run with
    several VSD particles), restored from its checkpoint. The checkpoint is read without running
    code (`load_checkpoint`); InputError (one line) for a folder that is not a run, a damaged or
    foreign checkpoint, one that does not hold the config's representation, or non-finite values;
    a StoppedRunWarning when the run stopped before its last step."""
    from .config import load_json

    run = Path(run_dir)
    if not (run / "config.json").is_file() or not (run / "checkpoint.pt").is_file():
        raise InputError(f"{run} is not a run directory (needs config.json and checkpoint.pt)")
    config = load_json(GenerateConfig, run / "config.json")
    state = load_checkpoint(run / "checkpoint.pt")
    particle_states = [state, *state.get("particles", [])]
    if not 0 <= particle < len(particle_states):
        raise InputError(f"{run} has {len(particle_states)} particle(s) (0..{len(particle_states) - 1}); "
                         f"there is no particle {particle}")
    weights = particle_states[particle].get("representation")
    if not isinstance(weights, dict):
        raise InputError(f"{run / 'checkpoint.pt'}: not an sds3d run checkpoint (no representation weights)")
    representation = build_representation(config, torch.Generator().manual_seed(config.seed), initialise=False)
    load_weights(representation, weights, run / "checkpoint.pt", config.representation)
    step = state.get("step")
    if isinstance(step, int) and step < config.steps:
        warnings.warn(f"{run} stopped at step {step} of {config.steps}: its last checkpoint is used "
                      f"(`sds3d generate ... --out {run} --resume` finishes it)", StoppedRunWarning, stacklevel=2)
    return config, representation.eval()


def load_weights(representation: Representation, weights: dict, path: Path, name: str) -> None:
    """`representation.load_state_dict(weights)`; InputError when they belong to another
    representation or hold NaN / inf (a diverged run)."""
    check_finite_weights(weights, path)
    try:
        representation.load_state_dict(weights)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as error:
        raise InputError(f"{path}: the checkpoint does not hold the {name} that config.json names "
                         f"({str(error).splitlines()[0][:100]})") from None


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
             callback=None, should_stop=None, initial: list[Representation] | None = None) -> RunResult:
    """Run score distillation. `prior` / `guidance` objects may be passed instead of being built from
    the config (tests, notebooks). `callback(step, logs, output)` is called every step (with
    particle 0's logs and render); `should_stop()` returning True ends the run early after a
    checkpoint (the result is kept). `initial` (one representation per particle, of the config's
    representation) starts the run from them instead of fresh ones; a resumed run starts from its
    checkpoint instead.

    With `config.retrieval.library` the prior is first adapted on assets retrieved for the prompt and,
    unless `retrieval.init` is off (or `initial` is given), the particles start from those assets
    (`sds3d.retrieval.run.prepare_retrieval`); a resumed run gets the adapted prior back from its
    cache. metrics.json records the retrieval under "retrieval".

    With n particles (VSD `particles`) a step visits every particle once: each renders its own random
    views, is scored by the one guidance (whose LoRA thus trains on every particle) and takes its own
    optimiser step. Each particle follows the same schedules as a one-particle run; a step costs n times
    as much. Particle 0 is the run's asset; the others are written to `particle_<i>/`."""
    from sds3d.guidance.priors.prior import resolve_device
    from sds3d.guidance.registry import check_prior_is, load_prior

    # Everything is checked before anything is written: a run that cannot start leaves `out` as it
    # was, and config.json is written with the first checkpoint, so the two always belong together.
    validate_config(config)
    config.prompt = validate_prompt(config.prompt)
    n_particles = particle_count(config)
    if initial is not None and len(initial) != n_particles:
        raise InputError(f"{len(initial)} initial representation(s) for {n_particles} particle(s); give one per particle")
    out = Path(config.out)
    checkpoint_path = out / "checkpoint.pt"
    resuming = resume and checkpoint_path.exists()
    state = check_resume(config, n_particles) if resuming else {}
    if config.init_from and not resuming:
        load_run(config.init_from)  # a damaged or foreign coarse run is refused before the prior loads
    particle_states = [state, *state.get("particles", [])]
    check_writable(out)
    try:
        device = resolve_device(config.device)
    except (ValueError, RuntimeError) as error:
        raise InputError(str(error).splitlines()[0]) from None
    if device.type == "cpu":  # a first run compiles its kernels while the prior loads
        build_in_background(representation_entry(config.representation).native_kernels)

    if prior is not None:
        check_prior_is(prior, config.prior)
    prior = prior if prior is not None else load_prior(config.prior, device)
    if isinstance(prior, DiffusersUNetPrior):
        prior.set_precision(config.prior_precision)
        prior.batch_threads = config.prior_batch_threads
    # a resumed run keeps what it retrieved when it started (and what adapting cost then); the adapted
    # prior comes back from the cache
    retrieval_record = state.get("retrieval")
    if config.retrieval.library and "skipped" not in (retrieval_record or {}):
        from sds3d.retrieval.retrieve import Retrieved
        from sds3d.retrieval.run import prepare_retrieval

        settings = config.retrieval
        retrieved = None if retrieval_record is None else [
            Retrieved(**{**item, "path": Path(item["path"])}) for item in retrieval_record["retrieved"]]
        assets, prior, record = prepare_retrieval(
            config, settings.library, settings.k, settings.adapt, settings.init and not resuming and initial is None,
            settings=settings, prior=prior, retrieved=retrieved, progress=progress)
        retrieval_record = retrieval_record or {**record, "init": assets is not None and initial is None}
        initial = initial if initial is not None else assets
    warn_outside_world(config.prompt, prior)
    generator = seed_everything(config.seed)  # after the prior: a run is the same whether it was loaded or passed in
    if initial is not None and not resuming:
        representations = [representation.to(device) for representation in initial]
    else:
        representations = [build_representation(config, generator, initialise=not resuming).to(device)
                           for _ in range(n_particles)]
    if guidance is None:
        guidance = make_guidance(config, prior)
    lr_scale = guidance.representation_lr_scale()
    particles = [Particle.create(representation, lr_scale) for representation in representations]
    prompts = PromptProcessor(prior, PromptConfig(config.prompt, config.negative_prompt, config.view_dependent))
    sampler = CameraSampler(width=config.resolution, height=config.resolution, **vars(config.camera))
    background = Background(config.background).to(device)
    shared_optimizers = {}  # stepped after every particle's visit
    if config.background == "learned":
        shared_optimizers["background"] = torch.optim.Adam(background.parameters(), lr=1e-3)

    start_step, elapsed_before, timer = 0, 0.0, Timer()
    finish_record = state.get("finish", {})  # what `Representation.finish` did after the last step
    if resuming:
        for particle, particle_state in zip(particles, particle_states):
            load_weights(particle.representation, particle_state["representation"], checkpoint_path,
                         config.representation)
            particle.load_state_dict(particle_state, lr_scale)
        for name, optimizer in shared_optimizers.items():  # checkpoints before particles kept it in "optimizers"
            optimizer.load_state_dict(state.get("shared_optimizers", state["optimizers"])[name])
        background.load_state_dict(state["background"])
        guidance.load_state_dict(state["guidance"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start_step, elapsed_before, timer.totals = state["step"], state["elapsed"], state["timings"]
    if not resuming:
        replace_earlier_run(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # what check_writable cannot see, e.g. root on a virtual file system such as /sys
        raise InputError(f"cannot write to output directory {out}: {error.strerror or error}") from None
    guard = FiniteGuard(out, state.get("backoffs", 0), start_step if resuming else None)

    def save_checkpoint(step: int) -> None:
        """Particle 0 at the top level (what `load_run` reads), the others under "particles"; config.json
        alongside (atomically, both)."""
        atomic_torch_save({
            "step": step, **particles[0].state_dict(), "particles": [p.state_dict() for p in particles[1:]],
            "shared_optimizers": {name: opt.state_dict() for name, opt in shared_optimizers.items()},
            "background": background.state_dict(), "guidance": guidance.state_dict(),
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "backoffs": guard.backoffs,
            "elapsed": elapsed_before + time.perf_counter() - started, "timings": timer.totals,
            **({"retrieval": retrieval_record} if retrieval_record is not None else {}),
            "finish": finish_record}, checkpoint_path)
        save_json(config, out / "config.json")
        guard.last_checkpoint = step

    def optimise(particle: Particle, step: int):
        """One render -> guidance -> backward -> optimiser step of one particle; -> (guidance logs, render)."""
        representation, optimizers = particle.representation, {**particle.optimizers, **shared_optimizers}
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
            loss = guided.loss
            if output.meta and "regularizer_loss" in output.meta:  # e.g. NeRF orientation / opacity terms
                loss = loss + output.meta["regularizer_loss"]
            alpha_loss = guidance.alpha_regularizer_loss(output.alpha, step)
            if alpha_loss is not None:
                loss = loss + alpha_loss
            smoothness = guidance.color_smoothness_weight(step)
            if smoothness:
                color_loss = representation.color_smoothness_loss(step)
                if color_loss is not None:
                    loss = loss + smoothness * color_loss
            loss.backward()
        guard.check_gradients(loss, optimizers)
        with timer("optimizer"):
            for optimizer in optimizers.values():
                optimizer.step()
            representation.after_step(step, output, particle.optimizers)
        guard.check_parameters(representation, step)
        return {"loss": guided.loss.item(), **guided.logs}, output

    preview_cameras = turntable_cameras(4, elevation=15.0, width=64)
    started = time.perf_counter()
    logs: dict = {}
    bar = tqdm(range(start_step, config.steps), initial=start_step, total=config.steps, disable=not progress,
               desc=config.prompt[:30], dynamic_ncols=True)
    steps_done = start_step
    monitor = RunMonitor(out, start_step)
    for step in bar:
        try:
            logs, output = optimise(particles[0], step)
            for particle in particles[1:]:
                optimise(particle, step)
        except NonFiniteStep as problem:  # skipped; the first time the learning rates are halved, then it stops
            guard.back_off(problem, step, [optimizer for particle in particles for optimizer in
                                           particle.optimizers.values()] + list(shared_optimizers.values()))
            bar.write(f"sds3d: step {step + 1}: {problem}; step skipped, learning rates halved", file=sys.stderr)
            steps_done = step + 1
            continue
        stats = particles[0].representation.stats()
        logs |= stats
        monitor.log(step + 1, elapsed_before + time.perf_counter() - started, logs)
        bar.set_postfix(loss=f"{logs['loss']:.4f}", **stats, refresh=False)
        if callback is not None:
            callback(step, logs, output)
        done = steps_done = step + 1
        if config.preview_every and (done % config.preview_every == 0 or done == config.steps):
            _save_preview(representations, preview_cameras, out / "previews" / f"step_{done:05d}.png")
        if done == config.steps and config.background == "white":
            records = [particle.representation.finish(torch.ones(3, device=device), particle.optimizers)
                       for particle in particles]
            finish_record = records[0]  # metrics.json reports particle 0
        stop = should_stop is not None and should_stop()
        if stop or (config.checkpoint_every and done % config.checkpoint_every == 0) or done == config.steps:
            save_checkpoint(done)
        if stop:
            break
    if guard.last_checkpoint != steps_done:  # the last step was skipped as non-finite
        save_checkpoint(steps_done)
    bar.close()
    monitor.close()

    seconds = elapsed_before + time.perf_counter() - started
    extra = {**finish_record, **({"retrieval": retrieval_record} if retrieval_record is not None else {})}
    metrics = finish_run(representations, config, out, seconds, logs, timer.totals, steps_done, progress, extra)
    return RunResult(out=out, representation=representations[0], metrics=metrics, particles=representations)


@torch.no_grad()
def _save_preview(representations: list[Representation], cameras, path: Path) -> None:
    """A grid of fixed views: one row per particle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = torch.cat([representation.render(cameras).rgb.clamp(0, 1) for representation in representations])
    save_png(image_grid((rgb * 255 + 0.5).to(torch.uint8).cpu().numpy(), columns=len(cameras)), path)


def save_outputs(representation: Representation, config: GenerateConfig, directory: Path,
                 progress: bool = False) -> tuple[Path, np.ndarray]:
    """Writes one particle's asset, turntable.gif and preview.png; -> (asset path, turntable frames).
    A representation holding NaN or inf is refused (InputError), never written."""
    bad = next((name for name, value in representation.state_dict().items()
                if value.is_floating_point() and not torch.isfinite(value).all()), None)
    if bad is not None:
        raise InputError(f"refusing to write a non-finite asset to {directory}: {bad} holds NaN or inf")
    directory.mkdir(parents=True, exist_ok=True)
    asset = save_asset(representation, directory, progress=progress)
    frames = render_turntable(representation, config.turntable_frames, config.turntable_resolution)
    save_animation(frames, directory / f"turntable.{config.turntable_format}")
    save_png(image_grid(eight_frames(frames), columns=4), directory / "preview.png")
    return asset, frames


def eight_frames(frames: np.ndarray) -> np.ndarray:
    """8 evenly spaced turntable frames [8, H, W, 3] (fewer if there are fewer)."""
    return frames[:: max(1, len(frames) // 8)][:8]


def finish_run(representations: list[Representation], config: GenerateConfig, out: Path, seconds: float, logs: dict,
               timings: dict, steps_done: int, progress: bool = False, extra: dict | None = None) -> dict:
    """Writes particle 0's outputs into `out`, every other particle's into `out/particle_<i>/` with
    `particles.png` (one row of turntable views per particle), and metrics.json (with `extra`'s keys
    added, e.g. the retrieval record); returns the metrics."""
    asset, frames = save_outputs(representations[0], config, out, progress)
    assets, rows = [asset], [eight_frames(frames)]
    for index, representation in enumerate(representations[1:], start=1):
        asset_i, frames_i = save_outputs(representation, config, out / f"particle_{index}", progress)
        assets.append(asset_i)
        rows.append(eight_frames(frames_i))
    if len(representations) > 1:
        save_png(image_grid(np.concatenate(rows), columns=len(rows[0])), out / "particles.png")
    total_phase = sum(timings.values()) or 1.0
    metrics = {
        "prompt": config.prompt, "steps": steps_done, "seconds": round(seconds, 2),
        "final_loss": logs.get("loss"), "asset": asset.name, **representations[0].stats(),
        "particles": len(representations), "particle_assets": [str(a.relative_to(out)) for a in assets],
        "time_breakdown": {k: round(v / total_phase, 3) for k, v in sorted(timings.items())},
        "seconds_per_step": round(total_phase / max(steps_done, 1), 4), **(extra or {}),
    }
    atomic_write_json(metrics, out / "metrics.json")
    return metrics
