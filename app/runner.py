"""Run management for the web UI: input limits, one server-chosen run directory per request, the
generation loop in a worker thread, and a snapshot of its progress for the page to poll.

Nothing here imports gradio; `sds3d.app.ui` turns `InputError` into `gr.Error`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import secrets
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sds3d.app.owner_jobs import OwnerJobs
from sds3d.config import to_dict
from sds3d.errors import InputError
from sds3d.evaluate import evaluate_asset
from sds3d.export import bake_textured_mesh, surface_of
from sds3d.generate import GenerateConfig, generate, load_run
from sds3d.guidance.priors.prior import DiffusionPrior, resolve_device
from sds3d.guidance.priors.prior_type import SHIPPED_PRIORS, is_local
from sds3d.guidance.registry import LIBRARY_GUIDANCE, load_prior
from sds3d.retrieval.run import RetrievalConfig
from sds3d.scope import scope_note
from sds3d.validation import check_particles, check_prompt_given, check_registered, validate_config

from .limits import Limits

log = logging.getLogger(__name__)

# files of a finished run offered for download (eval.json only when the prompt was scored; particles.png
# and particle_<i>/ only with several VSD particles; asset.glb of Gaussians and asset_obj.zip once asked for;
# retrieved.png only with a retrieval library)
EXPORTS = ("asset.ply", "asset.glb", "asset_obj.zip", "turntable.gif", "preview.png", "particles.png", "retrieved.png",
           "metrics.json", "metrics.csv", "loss.png", "config.json", "eval.json")
OBJ_FILES = ("asset.obj", "asset.mtl", "asset.png")  # what asset_obj.zip holds
SHARED = ("config.json", "metrics.json")  # offered as their copies in share/, without the server's paths


# A request outside the limits raises sds3d.errors.InputError; the message is shown to the user as is.


@dataclass
class RunRequest:
    """What a user picks on the page. `prior` and `library` are names from the server's allow-lists,
    never paths (`library` "" = no retrieval); `guidance_scale` None keeps the variant's default (which
    may be a schedule)."""

    prompt: str
    negative_prompt: str = ""
    representation: str = "gaussians"
    guidance: str = "sds"
    prior: str | None = None  # None: the representation's tuned prior if the server offers it, else its first
    steps: int | None = None  # None: the representation's tuned step count (within the server's limit)
    seed: int = 0
    guidance_scale: float | None = None
    resolution: int = 32
    particles: int = 1  # VSD only: assets optimised together on one LoRA
    library: str = ""  # retrieval: assets like the prompt, to start from (and to adapt the prior on)
    retrieve_k: int = RetrievalConfig.k
    adapt: bool = False  # ticked: adapt the prior; unticked: only redream adapts (RetrievalConfig.adapt None)
    init: bool = RetrievalConfig.init


def default_guidance_scale(guidance: str) -> float | None:
    """The variant's constant guidance scale, or None when it is scheduled or it has none."""
    value = getattr(getattr(GenerateConfig(), guidance), "guidance_scale", None)
    return float(value) if isinstance(value, (int, float)) else None


DEFAULT_PRIORS = ("embedded", "embedded-v2", "embedded-v3")


def prior_choices(paths: list[str]) -> dict[str, str]:
    """Allow-list of priors: name shown on the page -> spec for `load_prior`. The shipped "embedded"
    (v1, text only), "embedded-v2" (camera-conditioned) and "embedded-v3" (v2 following its camera more)
    plus the operator's local diffusers folders (named by their folder name) or hub ids (named as is)."""
    choices = {name: name for name in DEFAULT_PRIORS}
    for spec in paths:
        if spec in SHIPPED_PRIORS:
            choices[spec] = spec
            continue
        local = Path(spec).expanduser()
        looks_like_path = is_local(spec)
        if looks_like_path and not local.is_dir():
            raise ValueError(f"prior folder {spec} does not exist")
        name = local.resolve().name if looks_like_path else spec
        if name in choices:
            raise ValueError(f"two priors are named {name!r}; rename one of the folders")
        choices[name] = str(local.resolve()) if looks_like_path else spec
    return choices


def tuned_prior(priors: dict[str, str], representation: str) -> str:
    """The name in `priors` (an allow-list) of the prior `representation` is tuned with
    (`RepresentationEntry.run_defaults`) when it is offered, else the list's first."""
    tuned = GenerateConfig(representation=representation).prior
    return tuned if tuned in priors else next(iter(priors))


def library_choices(folder: str | Path | None) -> dict[str, str]:
    """Allow-list of retrieval libraries: name shown on the page (the subfolder's name) -> path, for
    the subfolders of `folder` with a built index (`LibraryIndex.load` accepts it); {} without a
    folder. ValueError for a missing folder or one holding no indexed library."""
    from sds3d.retrieval.index import LibraryIndex

    if not folder:
        return {}
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"libraries folder {folder} does not exist")
    choices = {}
    for sub in sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith(".")):
        try:
            LibraryIndex.load(sub)
        except InputError as error:
            log.info("library %s left out: %s", sub.name, error)
            continue
        choices[sub.name] = str(sub)
    if not choices:
        raise ValueError(f"no subfolder of {folder} is a library with a built index "
                         f"(make one with: sds3d library build {folder}/NAME)")
    return choices


@dataclass
class Snapshot:
    """The latest state of a run, as the page shows it."""

    step: int
    total: int
    elapsed: float  # seconds since the run started, loading the prior included
    seconds_per_step: float | None  # measured from the first step on (None before the second step)
    renders: np.ndarray | None  # uint8 [H, W, 3]: this step's views side by side
    loss: float | None

    @property
    def eta(self) -> float | None:
        return None if self.seconds_per_step is None else self.seconds_per_step * (self.total - self.step)


@dataclass
class Run:
    """One request: its directory, its worker thread and what the thread has reported so far."""

    dir: Path
    config: GenerateConfig
    prior: DiffusionPrior  # shared with the other runs of the same prior (read-only for them)
    prior_name: str = "embedded"  # the prior's name on the page (its allow-list key), never a server path
    library_name: str = ""  # the retrieval library's name on the page ("" = none)
    retrieval: dict | None = None  # metrics.json's "retrieval" record once the run is done
    stop_requested: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)  # set once the files are written
    scores: dict = field(default_factory=dict)
    error: str | None = None
    note: str | None = None  # one line to show at the start, e.g. a prompt outside the embedded prior's world
    _snapshot: Snapshot | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _mesh_lock: threading.Lock = field(default_factory=threading.Lock)
    _started: float = field(default_factory=time.perf_counter)
    _first_step: tuple[int, float] | None = None  # (step, time) of the first report

    def stop(self) -> None:
        """Ends the run after the current step; the partial result is written as usual."""
        self.stop_requested.set()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot or Snapshot(0, self.config.steps, time.perf_counter() - self._started, None, None,
                                              None)

    def asset(self) -> Path | None:
        """The run's asset: the 3DGS `asset.ply` (Gaussians) or a textured `asset.glb` (NeRF, mesh)."""
        return next((self.dir / name for name in ("asset.ply", "asset.glb") if (self.dir / name).is_file()), None)

    def files(self) -> list[Path]:
        """The exported files that exist, in `EXPORTS` order, then the other particles' assets. config.json
        and metrics.json are the shareable copies (`share/`), which hold no server path."""
        particle_assets = sorted(self.dir.glob("particle_*/asset.*"), key=lambda path: int(path.parent.name[9:]))
        paths = [self.dir / (f"share/{name}" if name in SHARED else name) for name in EXPORTS]
        return [path for path in paths if path.is_file()] + particle_assets

    def export_meshes(self, texture_size: int = 1024, resolution: int = 128, max_faces: int = 20000) -> list[Path]:
        """A textured mesh of the finished run's asset (particle 0), made as `sds3d export` makes it by
        default (Gaussians: marching cubes of their density): `asset.glb` (a NeRF or mesh run's own is
        kept) and `asset_obj.zip` (`OBJ_FILES`), both +Y up; made once -> `files()`. InputError while
        the run is going, when it has no asset, or when the server lacks the mesh tools."""
        if not self.finished.is_set():
            raise InputError("The run is still going; make the mesh once it is done.")
        if self.asset() is None:
            raise InputError("This run has no asset to make a mesh of.")
        archive, glb, work = self.dir / "asset_obj.zip", self.dir / "asset.glb", self.dir / "mesh"
        with self._mesh_lock:
            if not archive.is_file():
                work.mkdir(exist_ok=True)
                _, asset = load_run(self.dir)
                try:
                    mesh = bake_textured_mesh(*surface_of(asset, resolution, max_faces=max_faces), texture_size)
                except ImportError as error:
                    raise InputError(f"This server cannot make meshes: {error}") from None
                mesh.save(work / "asset.obj")
                with zipfile.ZipFile(work / archive.name, "w", zipfile.ZIP_DEFLATED) as zipped:
                    for name in OBJ_FILES:
                        zipped.write(work / name, name)
                if not glb.is_file():
                    os.replace(mesh.save(work / glb.name), glb)
                os.replace(work / archive.name, archive)  # last: its presence means both are complete
        return self.files()

    def write_shared_config(self) -> Path:
        """`share/config.json`: the run's config as the user may re-run it, without the server's paths (the
        run directory becomes the default `out`, the prior its name on the page)."""
        retrieval = dataclasses.replace(self.config.retrieval, library=self.library_name,
                                        cache_dir=RetrievalConfig.cache_dir)
        data = to_dict(dataclasses.replace(self.config, out=GenerateConfig.out, prior=self.prior_name,
                                           retrieval=retrieval))
        path = self.dir / "share" / "config.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(data, indent=2))
        return path

    def write_shared_metrics(self) -> Path:
        """`share/metrics.json`: metrics.json with the retrieval record's server paths replaced: the library
        by its name on the page, each asset by its file within the library."""
        data = json.loads((self.dir / "metrics.json").read_text())
        record = data.get("retrieval")
        if record:
            folder = record["library"]

            def within_library(path: str) -> str:
                return str(Path(path).relative_to(folder)) if Path(path).is_relative_to(folder) else Path(path).name

            record["library"] = self.library_name
            for item in [*record.get("retrieved", []), *record.get("adaptation", {}).get("assets", [])]:
                item["path"] = within_library(item["path"])
            if "skipped" in record:
                record["skipped"] = record["skipped"].replace(folder, f"library {self.library_name!r}")
        path = self.dir / "share" / "metrics.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(data, indent=2))
        return path

    def retrieved_sheet(self) -> Path | None:
        """`retrieved.png`, a contact sheet of the retrieved assets (each turned to face the front, with
        its rank, caption and scores), made from the retrieval record once the run is done."""
        from sds3d.retrieval.contact_sheet import asset_thumbnail, save_contact_sheet

        path = self.dir / "retrieved.png"
        items = (self.retrieval or {}).get("retrieved") or []
        if items and not path.is_file():
            tiles = [asset_thumbnail(item["path"], item["yaw_degrees"]) for item in items]
            labels = [f"{rank}. {item['caption']}\ntext {item['text_score']:.2f} image {item['image_score']:.2f}"
                      for rank, item in enumerate(items, 1)]
            save_contact_sheet(tiles, labels, path, columns=4)
        return path if path.is_file() else None

    def _report(self, step: int, logs: dict, output) -> None:
        views = (output.rgb.detach().clamp(0, 1) * 255 + 0.5).to("cpu", torch.uint8).numpy()
        renders = np.concatenate(list(views), axis=1)
        now = time.perf_counter()
        first_step, first_time = self._first_step = self._first_step or (step, now)
        rate = (now - first_time) / (step - first_step) if step > first_step else None
        with self._lock:
            self._snapshot = Snapshot(step + 1, self.config.steps, now - self._started, rate, renders, logs.get("loss"))

    def execute(self) -> None:
        """Generates, scores micro-world prompts, and records the first line of any error."""
        try:
            result = generate(self.config, prior=self.prior, progress=False, callback=self._report,
                              should_stop=self.stop_requested.is_set)
            self.write_shared_config()
            self.write_shared_metrics()
            self.retrieval = result.metrics.get("retrieval")
            if self.retrieval:
                try:
                    self.retrieved_sheet()
                except Exception:  # the run itself is fine; the page lists what was retrieved without pictures
                    log.exception("run %s: no contact sheet of the retrieved assets", self.dir.name)
            self.scores = evaluate_asset(result.representation, self.config.prompt)
            if self.scores:
                (self.dir / "eval.json").write_text(json.dumps(self.scores, indent=2))
        except ValueError as error:
            self.error = str(error).splitlines()[0]
            if self.config.retrieval.library:  # e.g. nothing close to the prompt: the library by its name
                self.error = self.error.replace(self.config.retrieval.library, f"library {self.library_name!r}")
        except Exception as error:  # the page gets one line; the log gets the traceback
            log.exception("run %s failed", self.dir.name)
            self.error = f"The run failed: {type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


class Runner:
    """Checks requests against the limits and starts each in its own directory under `runs_dir`.

    Run directories are named `<UTC time>-<32 random hex digits>` by the server; nothing a user sends
    becomes part of a path. Output settings (turntable size, device) are the operator's.

    The priors on offer are loaded here, once, before any run starts, and shared by the runs: diffusers
    and transformers load models by patching `torch.nn.Module` for the whole process, which would
    corrupt the modules a concurrent run creates. VSD, which trains a LoRA on the UNet, gets its own
    copy of the UNet (`vsd.separate_unet`), so the shared prior is only read.

    `slots` (None: no limit) bounds the runs and meshings executing at once. The page's queue bounds
    them too, but it frees a slot as soon as a page goes away, while its stopped run still finishes
    the step, the turntable and the scores; a run or meshing waits here until a slot is free."""

    def __init__(self, runs_dir: str | Path, priors: dict[str, str] | None = None, limits: Limits = Limits(),
                 turntable_frames: int = 24, turntable_resolution: int = 128, device: str = "auto",
                 slots: int | None = None, libraries: dict[str, str] | None = None, adapted_priors: str = ""):
        self.runs_dir = Path(runs_dir).resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.priors = priors or prior_choices([])
        self.models = {name: load_prior(spec, resolve_device(device)) for name, spec in self.priors.items()}  # loaded once, shared
        self.libraries = libraries or {}  # retrieval libraries on offer: name -> folder (`library_choices`)
        self.adapted_priors = str(adapted_priors or "")  # their adapted priors' cache ("" = the user's default)
        self.limits = limits
        self.turntable_frames = turntable_frames
        self.turntable_resolution = turntable_resolution
        self.device = device
        self.slots = threading.BoundedSemaphore(slots) if slots else contextlib.nullcontext()
        self._active = OwnerJobs()

    def config(self, request: RunRequest) -> GenerateConfig:
        """The GenerateConfig for `request`, or InputError naming the first limit it breaks."""
        limits = self.limits
        prompt = " ".join(str(request.prompt or "").split())
        negative = " ".join(str(request.negative_prompt or "").split())
        check_prompt_given(prompt)
        for label, text in (("prompt", prompt), ("negative prompt", negative)):
            if len(text) > limits.max_prompt_chars:
                raise InputError(f"The {label} is {len(text)} characters long; the limit is {limits.max_prompt_chars}.")
        check_registered(str(request.representation), str(request.guidance))
        prior = self.prior_name(request)
        if prior not in self.priors:
            raise InputError(f"Unknown prior {prior!r}; this server offers {', '.join(self.priors)}.")
        tuned = GenerateConfig(representation=str(request.representation))
        steps = min(tuned.steps, limits.max_steps) if request.steps is None else whole_number(request.steps, "Steps")
        seed = whole_number(request.seed, "Seed")
        if not 1 <= steps <= limits.max_steps:
            raise InputError(f"Steps must be between 1 and {limits.max_steps}, got {steps}.")
        if not 0 <= seed <= limits.max_seed:
            raise InputError(f"Seed must be between 0 and {limits.max_seed}, got {seed}.")
        resolution = whole_number(request.resolution, "Resolution")
        if resolution not in limits.resolutions:
            raise InputError(f"Resolution must be one of {', '.join(map(str, limits.resolutions))}, got {resolution}.")
        particles = whole_number(request.particles, "Particles")
        if not 1 <= particles <= limits.max_particles:
            raise InputError(f"Particles must be between 1 and {limits.max_particles}, got {particles}.")
        check_particles(request.guidance, particles)
        retrieval = self.retrieval_settings(request)
        config = GenerateConfig(prompt=prompt, negative_prompt=negative, representation=request.representation,
                                guidance=request.guidance, prior=self.priors[prior], steps=steps, seed=seed,
                                resolution=resolution, device=self.device,
                                turntable_frames=self.turntable_frames, turntable_resolution=self.turntable_resolution,
                                retrieval=retrieval)
        if request.guidance_scale is not None:
            scale = _finite(request.guidance_scale, "Guidance scale")
            section = getattr(config, request.guidance)
            if not hasattr(section, "guidance_scale"):
                raise InputError(f"{request.guidance} has no guidance scale; leave the field empty.")
            if not 0 < scale <= limits.max_guidance_scale:
                raise InputError(f"Guidance scale must be above 0 and at most {limits.max_guidance_scale:g}, "
                                 f"got {scale:g}.")
            section = dataclasses.replace(section, guidance_scale=scale)
            config = dataclasses.replace(config, **{request.guidance: section})
        config = dataclasses.replace(config, vsd=dataclasses.replace(config.vsd, separate_unet=True, particles=particles))
        validate_config(config)  # anything the limits above do not cover (e.g. control characters in a prompt)
        return config

    def prior_name(self, request: RunRequest) -> str:
        """The name (on this server's list) of the prior `request` runs with: its own, or for None
        `tuned_prior`'s."""
        return request.prior if request.prior is not None else tuned_prior(self.priors, str(request.representation))

    def retrieval_settings(self, request: RunRequest) -> RetrievalConfig:
        """The run's retrieval settings: the library's folder looked up by its name; InputError for a
        name not on offer, a K outside the limits or switches that are not true/false."""
        name = str(request.library or "")
        if not name and request.guidance in LIBRARY_GUIDANCE:
            offered = (f"pick one of {', '.join(self.libraries)}" if self.libraries
                       else "this server offers none; pick another guidance")
            raise InputError(f"{request.guidance} retrieves assets for the prompt from a library: {offered}.")
        if not name:
            return RetrievalConfig()
        if name not in self.libraries:
            offered = f"this server offers {', '.join(self.libraries)}" if self.libraries else "this server offers none"
            raise InputError(f"Unknown library {name!r}; {offered}.")
        k = whole_number(request.retrieve_k, "K")
        if not 1 <= k <= self.limits.max_retrieve_k:
            raise InputError(f"K (assets retrieved) must be between 1 and {self.limits.max_retrieve_k}, got {k}.")
        for label, value in (("Adapt the prior", request.adapt), ("Start from the retrieved assets", request.init)):
            if not isinstance(value, bool):
                raise InputError(f"{label} must be true or false, got {value!r}.")
        return RetrievalConfig(library=self.libraries[name], k=k, adapt=True if request.adapt else None,
                               init=request.init, cache_dir=self.adapted_priors)

    def start(self, request: RunRequest, owner: str) -> Run:
        """Validates `request`, creates its run directory and starts the worker thread. `owner`
        (the page session) is who may stop it; a session's earlier run is stopped first."""
        config, prior = self.config(request), self.prior_name(request)
        run_dir = self.runs_dir / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(16)}"
        run_dir.mkdir()
        run = Run(dir=run_dir, config=dataclasses.replace(config, out=str(run_dir)), prior=self.models[prior],
                  prior_name=prior, library_name=str(request.library or ""),
                  note=scope_note(config.prompt, self.models[prior]))
        self._active.start(owner, run)
        log.info("run %s: %r, %d steps, seed %d", run_dir.name, config.prompt, config.steps, config.seed)
        threading.Thread(target=self._work, args=(run, owner), name=f"sds3d-run-{run_dir.name}", daemon=True).start()
        return run

    def stop(self, owner: str) -> bool:
        """Stops `owner`'s running job; False if it has none."""
        return self._active.stop(owner)

    def mesh(self, run: Run) -> list[Path]:
        """`run.export_meshes()` in one of the slots."""
        with self.slots:
            return run.export_meshes()

    def _work(self, run: Run, owner: str) -> None:
        with self.slots:
            if run.stop_requested.is_set():  # its page went away, or sent another request, while it waited
                run.error = "Stopped before it started."
            else:
                run.execute()
        self._active.finish(owner, run)
        run.finished.set()


def _finite(value, label: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{label} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise InputError(f"{label} must be a finite number, got {value!r}.")
    return number


def whole_number(value, label: str) -> int:
    """`value` (a page field) as an int; InputError naming `label` unless it is a whole number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{label} must be a whole number, got {value!r}.") from None
    if not number.is_integer():
        raise InputError(f"{label} must be a whole number, got {value!r}.")
    return int(number)
