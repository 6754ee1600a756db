"""The web UI's Edit tab: pick a finished run of this page or upload an asset, select a region by
text, edit it towards a new prompt, compare before and after, download the edited asset.

The tab is a thin client of the library: `sds3d.scene.load.load_asset` reads the asset,
`sds3d.features` distils a feature field onto it when it has none (once per asset, saved beside it)
and answers the text query (`select_points`, `render_highlight`), and `sds3d.edit.edit` runs the
edit into a new run folder. Feature distillation and edits take one of the Runner's slots, the
same `--concurrency` limit as the Generate tab's runs.

Users send settings and labels, never paths: the assets a page may edit are the finished runs of
that page (Generate tab), its uploads and its edits, each under a server-named directory in the
runs folder, looked up by the label shown in the list. Server paths are removed from the one-line
errors shown on the page.

`EditWorkspace` does the work (no gradio); `add_edit_tab` adds the components and wiring.
"""

import dataclasses
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sds3d.app.owner_jobs import OwnerJobs
from sds3d.app.runner import whole_number
from sds3d.edit import EditConfig, validate_edit_config
from sds3d.errors import InputError, first_line
from sds3d.guidance.edit.base import EDIT_SCORES

log = logging.getLogger(__name__)

UPLOAD_SUFFIXES = (".ply", ".glb")
MAX_UPLOAD_MB = 100  # a 3DGS PLY of about 400k Gaussians (SH degree 3)
# files of a finished edit offered for download, in this order (asset.glb for NeRF and DMTet edits)
DOWNLOADS = ("asset.ply", "asset.glb", "before_after.gif", "before_after.png", "turntable.gif", "preview.png",
             "metrics.json")
POLL_SECONDS = 0.5


@dataclass
class EditAsset:
    """An asset a page may edit. `source` is what `load_asset` and `edit` read: a run directory, or
    the `asset.ply` of an upload; `source_prompt` what it shows ("" when unknown: uploads)."""

    label: str
    source: Path
    source_prompt: str


@dataclass
class EditSession:
    """One page's state (a gr.State, kept on the server): its assets by label, the Generate-tab runs
    it has started, the latest asset loaded with its feature field, and the latest selection."""

    assets: dict = field(default_factory=dict)  # label -> EditAsset, in the order they appeared
    runs: list = field(default_factory=list)  # sds3d.app.runner.Run objects of the Generate tab
    loaded: tuple | None = None  # (label, representation with its feature field attached)
    selection: tuple | None = None  # (label, query, mask [N] bool, highlighted image, context: what it shows)


@dataclass
class EditJob:
    """One edit in a worker thread, and what it has reported so far."""

    dir: Path
    config: EditConfig
    asset: EditAsset
    stop_requested: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    step: int = 0
    error: str | None = None
    metrics: dict = field(default_factory=dict)
    _started: float = field(default_factory=time.perf_counter)
    _first_step: float | None = None

    def stop(self) -> None:
        """Ends the edit after the current step; the partial edit is written as usual."""
        self.stop_requested.set()

    def tick(self) -> bool:
        """`edit`'s `should_stop`, called once after every finished step: counts the step."""
        self.step += 1
        self._first_step = self._first_step or time.perf_counter()
        return self.stop_requested.is_set()

    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def eta(self) -> float | None:
        if self.step < 2:
            return None
        rate = (time.perf_counter() - self._first_step) / (self.step - 1)
        return rate * (self.config.steps - self.step)

    def files(self) -> list[Path]:
        return [self.dir / name for name in DOWNLOADS if (self.dir / name).is_file()]


def _utc_clock(directory: Path) -> str:
    """HH:MM:SS of a server-named directory (`<YYYYmmdd-HHMMSS>-<hex>`)."""
    stamp = directory.name[9:15]
    return f"{stamp[:2]}:{stamp[2:4]}:{stamp[4:6]}" if stamp.isdigit() else "?"


def _unique(label: str, taken) -> str:
    candidate, n = label, 2
    while candidate in taken:
        candidate, n = f"{label} ({n})", n + 1
    return candidate


class EditWorkspace:
    """The Edit tab's work, without gradio. `runner` gives the runs folder, the slots, the priors on
    offer and the output settings; `teacher` the feature teacher for text selection (None: the
    shipped part teacher, loaded when first needed); `distill` the feature distillation settings;
    `base` the EditConfig the page's choices are applied to (default: the runner's turntable size
    and device); `priors` the loaded priors by name (default: the runner's, shared with its runs);
    `evaluate` adds evaluator scores of micro-world prompts to an edit's metrics; `mesh_points` the
    Gaussians sampled on an uploaded mesh."""

    def __init__(self, runner, teacher=None, distill=None, base: EditConfig | None = None, priors: dict | None = None,
                 evaluate: bool = True, mesh_points: int = 20000):
        from sds3d.features.distill import DistillConfig

        self.runner = runner
        self.limits = runner.limits
        self._teacher = teacher
        self._teacher_lock = threading.Lock()
        self.distill = distill or DistillConfig()
        self.base = base or EditConfig(device=runner.device, turntable_frames=runner.turntable_frames,
                                       turntable_resolution=runner.turntable_resolution)
        self.priors = priors if priors is not None else runner.models
        self.evaluate = evaluate
        self.mesh_points = mesh_points
        self._active = OwnerJobs()

    def prior_spec(self, name: str) -> str:
        """What the prior on offer as `name` was loaded from (the runner's allow-list: a folder for an
        operator's prior): an edit's config.json records it, as a run's does."""
        return getattr(self.runner, "priors", {}).get(name, name)

    def prior_model(self, spec: str):
        """The loaded prior an edit config names (`prior_spec` of one on offer)."""
        return next(model for name, model in self.priors.items() if self.prior_spec(name) == spec)

    # ----- the page's assets ------------------------------------------------------------------

    def remember_run(self, session: EditSession, run) -> None:
        """Note a Generate-tab run of this page; it is offered once it has finished with an asset."""
        if run is not None and all(run is not seen for seen in session.runs):
            session.runs.append(run)

    def choices(self, session: EditSession) -> list[str]:
        """Labels of the assets this page may edit: its finished runs, uploads and edits."""
        for run in session.runs:
            if run.finished.is_set() and not run.error and run.asset() is not None and \
                    all(asset.source != run.dir for asset in session.assets.values()):
                label = _unique(f"{run.config.prompt} · generated {_utc_clock(run.dir)}", session.assets)
                session.assets[label] = EditAsset(label, run.dir, run.config.prompt)
        return list(session.assets)

    def asset(self, session: EditSession, label) -> EditAsset:
        if not label:
            raise InputError("Pick an asset first: a finished run of this page, or upload a .ply or .glb.")
        if label not in session.assets:
            raise InputError(f"Unknown asset {str(label)[:60]!r}; pick one from the list.")
        return session.assets[label]

    def _new_dir(self) -> Path:
        return self.runner.runs_dir / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(16)}"

    def import_upload(self, session: EditSession, path) -> EditAsset:
        """An uploaded 3DGS PLY (copied as is) or GLB mesh (sampled as Gaussians, `load_asset`) ->
        `asset.ply` in a new server-named directory, offered under the file's name. InputError,
        naming the file but no server path, for anything `load_asset` refuses."""
        from sds3d.scene.load import load_asset

        if not path:
            raise InputError("Upload a 3DGS .ply or a .glb mesh.")
        path = Path(path)
        name = path.name
        if path.suffix.lower() not in UPLOAD_SUFFIXES:
            kind = path.suffix or "file without suffix"
            raise InputError(f"{name}: upload a 3DGS .ply or a .glb mesh, not a {kind}.")
        size = path.stat().st_size
        if size > MAX_UPLOAD_MB * 2**20:
            raise InputError(f"{name} is {size / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB.")
        try:
            representation = load_asset(path, num_points=self.mesh_points)
        except InputError as error:
            raise InputError(str(error).replace(str(path), name)) from None
        except Exception as error:  # a damaged file that the readers do not name: one line all the same
            log.exception("upload %s failed to load", name)
            raise InputError(f"{name}: cannot be read ({type(error).__name__}: {first_line(error)[:80]})") from None
        folder = self._new_dir()
        folder.mkdir(parents=True)
        tmp = folder / ".asset.tmp.ply"
        if path.suffix.lower() == ".ply":
            shutil.copyfile(path, tmp)
        else:
            representation.save_ply(tmp)
        os.replace(tmp, folder / "asset.ply")
        label = _unique(f"{name} · uploaded {_utc_clock(folder)}", session.assets)
        session.assets[label] = asset = EditAsset(label, folder / "asset.ply", "")
        return asset

    # ----- selection ----------------------------------------------------------------------------

    def teacher(self):
        """The feature teacher, loaded once; InputError when this server has none."""
        with self._teacher_lock:
            if self._teacher is None:
                from sds3d.features.load import load_feature_teacher

                try:
                    self._teacher = load_feature_teacher()
                except InputError as error:
                    log.warning("no feature teacher: %s", error)
                    raise InputError("Text selection is not available: this server has no feature teacher. "
                                     "Leave the region empty to edit the whole asset.") from None
            return self._teacher

    def has_features(self, session: EditSession, label) -> bool:
        """Whether the asset has a field of this server's teacher and its version (else `features`
        distils one)."""
        from sds3d.features.assets import saved_fields

        asset = self.asset(session, label)
        loaded = session.loaded is not None and session.loaded[0] == label
        teacher = self.teacher()
        return loaded or bool(saved_fields(asset.source, teacher.name, teacher.version))

    def features(self, session: EditSession, label):
        """The asset with its feature field attached: the saved one of this server's teacher (and its
        version), else one distilled now (a progress bar; `DistillConfig` steps) and saved beside the
        asset, replacing a field of another version of the teacher."""
        from sds3d.features.assets import features_dir, saved_fields
        from sds3d.features.distill import distill_features
        from sds3d.features.field import field_filename, load_field, save_field
        from sds3d.scene.load import load_asset

        asset = self.asset(session, label)
        if session.loaded is not None and session.loaded[0] == label:
            return session.loaded[1]
        teacher = self.teacher()
        representation = load_asset(asset.source)
        saved = saved_fields(asset.source, teacher.name, teacher.version)
        if saved:
            load_field(saved[0], representation)
        else:
            with self.runner.slots:
                result = distill_features(representation, teacher, self.distill, progress=True)
                save_field(result.field, representation,
                           features_dir(asset.source) / field_filename(teacher.name, result.field.latent_dim))
        session.loaded = (label, representation)
        return representation

    def context(self, session: EditSession, label, source_prompt) -> str:
        """What the asset shows, for its selections: the source prompt typed, else the run's prompt ("" for an upload)."""
        return " ".join(str(source_prompt or "").split()) or self.asset(session, label).source_prompt

    def select(self, session: EditSession, label, query, source_prompt: str = "") -> tuple:
        """(mask [N] bool, uint8 image [H, 4 W, 3] of four views with the selection tinted orange)
        for a text query on the asset, what it shows (`source_prompt`, else the run's prompt) telling
        the selection its kind; InputError for an empty query or one that matches nothing."""
        from sds3d.features.select import render_highlight, select_points
        from sds3d.turntable import image_grid

        query = " ".join(str(query or "").split())
        if not query:
            raise InputError("Type what to select, such as \"the handle\".")
        if len(query) > self.limits.max_prompt_chars:
            raise InputError(f"The region is {len(query)} characters long; "
                             f"the limit is {self.limits.max_prompt_chars}.")
        representation = self.features(session, label)
        context = self.context(session, label, source_prompt)
        mask = select_points(representation, query, teacher=self.teacher(), context=context or None)
        image = image_grid(render_highlight(representation, mask), columns=4)
        session.selection = (label, query, mask, image, context)
        return mask, image

    # ----- edits --------------------------------------------------------------------------------

    def edit_config(self, session: EditSession, label, source_prompt, prompt, guidance, steps, seed,
                    prior) -> EditConfig:
        """The EditConfig of a request (its `out` a new server-named directory), or InputError naming
        the first choice outside the limits."""
        from sds3d.prompts import validate_prompt

        asset = self.asset(session, label)
        limits = self.limits
        texts = {}
        for name, text in (("edit prompt", prompt), ("source prompt", source_prompt or asset.source_prompt)):
            text = " ".join(str(text or "").split())
            if len(text) > limits.max_prompt_chars:
                raise InputError(f"The {name} is {len(text)} characters long; the limit is {limits.max_prompt_chars}.")
            texts[name] = text
        if not texts["edit prompt"]:
            raise InputError("Type the edit prompt: what the asset should become, such as \"a blue mug\".")
        if not texts["source prompt"]:
            raise InputError("Type the source prompt: what the asset shows now, such as \"a red mug\".")
        if guidance not in EDIT_SCORES:
            raise InputError(f"Unknown guidance {guidance!r}; choose one of {', '.join(EDIT_SCORES)}.")
        if prior not in self.priors:
            raise InputError(f"Unknown prior {prior!r}; this server offers {', '.join(self.priors)}.")
        steps, seed = whole_number(steps, "Steps"), whole_number(seed, "Seed")
        if not 1 <= steps <= limits.max_steps:
            raise InputError(f"Steps must be between 1 and {limits.max_steps}, got {steps}.")
        if not 0 <= seed <= limits.max_seed:
            raise InputError(f"Seed must be between 0 and {limits.max_seed}, got {seed}.")
        config = dataclasses.replace(self.base, prompt=texts["edit prompt"], source_prompt=texts["source prompt"],
                                     guidance=guidance, region="", steps=steps, seed=seed, prior=self.prior_spec(prior),
                                     out=str(self._new_dir()))
        try:
            validate_edit_config(config)
            for text in texts.values():
                validate_prompt(text)
        except ValueError as error:
            raise InputError(first_line(error)) from None
        return config

    def region_mask(self, session: EditSession, label, query, source_prompt: str = ""):
        """The mask of `query` on the asset (the page's latest selection when it is the same), or None
        for an empty query (the whole asset)."""
        query = " ".join(str(query or "").split())
        if not query:
            return None
        context = self.context(session, label, source_prompt)
        if session.selection is not None and (*session.selection[:2], session.selection[4]) == (label, query, context):
            return session.selection[2]
        return self.select(session, label, query, source_prompt)[0]

    def start(self, session: EditSession, label, config: EditConfig, mask, owner: str) -> EditJob:
        """Starts the edit in a worker thread, in one of the runner's slots. `owner` (the page
        session) is who may stop it; the page's earlier edit is stopped first."""
        job = EditJob(dir=Path(config.out), config=config, asset=self.asset(session, label))
        self._active.start(owner, job)
        log.info("edit %s: %r -> %r, %s, %d steps", job.dir.name, config.source_prompt, config.prompt,
                 config.guidance, config.steps)
        threading.Thread(target=self._work, args=(job, mask, owner), name=f"sds3d-edit-{job.dir.name}",
                         daemon=True).start()
        return job

    def stop(self, owner: str) -> bool:
        """Stops `owner`'s running edit; False if it has none."""
        return self._active.stop(owner)

    def finish(self, session: EditSession, job: EditJob) -> EditAsset | None:
        """Offers a finished edit for further editing (its label in the list); None after an error."""
        if job.error or not job.finished.is_set():
            return None
        label = _unique(f"{job.config.prompt} · edited {_utc_clock(job.dir)}", session.assets)
        session.assets[label] = asset = EditAsset(label, job.dir, job.config.prompt)
        return asset

    def public(self, message: str, asset: EditAsset | None = None) -> str:
        """A message without server paths: the asset's path becomes its label, the runs folder "runs"."""
        if asset is not None:
            message = message.replace(str(asset.source), f"\"{asset.label}\"")
        return message.replace(str(self.runner.runs_dir), "runs")

    def _work(self, job: EditJob, mask, owner: str) -> None:
        from sds3d.edit import edit

        try:
            with self.runner.slots:
                if job.stop_requested.is_set():  # its page went away, or sent another edit, while it waited
                    job.error = "Stopped before it started."
                    return
                result = edit(job.asset.source, config=job.config, region_mask=mask,
                              prior=self.prior_model(job.config.prior), progress=False, evaluate=self.evaluate,
                              should_stop=job.tick)
                job.metrics = result.metrics
        except ValueError as error:
            job.error = self.public(first_line(error), job.asset)
        except Exception as error:  # the page gets one line; the log gets the traceback
            log.exception("edit %s failed", job.dir.name)
            job.error = f"The edit failed: {type(error).__name__}: {self.public(first_line(error), job.asset)}"
        finally:
            self._active.finish(owner, job)
            job.finished.set()


def progress_text(job: EditJob) -> str:
    if job.step == 0:
        return "Editing: starting…"
    eta = job.eta()
    return (f"**Step {job.step}/{job.config.steps}** · {job.elapsed():.0f} s elapsed · "
            + ("ETA …" if eta is None else f"ETA {eta:.0f} s"))


def result_text(job: EditJob) -> str:
    """One paragraph on a finished edit: steps and seconds, identity kept, region kept, target scores."""
    metrics = job.metrics
    steps = metrics.get("steps", job.step)
    head = (f"**Stopped at step {steps}/{job.config.steps}**" if steps < job.config.steps
            else f"**Done: {steps} steps**")
    parts = [f"{head} in {metrics.get('seconds', job.elapsed()):.0f} s ({job.config.guidance}, "
             f"\"{job.config.source_prompt}\" → \"{job.config.prompt}\")."]
    if "chamfer_to_source" in metrics:
        parts.append(f"Chamfer distance to the source shape {metrics['chamfer_to_source']:.4f}")
    if "outside_psnr_db" in metrics:
        parts.append(f"PSNR outside the region {metrics['outside_psnr_db']:.1f} dB "
                     f"({metrics['selected_gaussians']} Gaussians edited)")
    if metrics.get("kind_acc") is not None:
        parts.append(f"evaluator: kind accuracy {metrics['kind_acc']:.2f}, colour accuracy {metrics['color_acc']:.2f}")
    return parts[0] + (" " + "; ".join(parts[1:]) + "." if len(parts) > 1 else "")


def selection_text(mask, query: str) -> str:
    return f"**{int(mask.sum())} of {mask.numel()} points** match \"{query}\" (tinted orange)."


def add_edit_tab(runner, concurrency: int = 1, generated=None, workspace: EditWorkspace | None = None) -> EditWorkspace:
    """Adds the Edit tab to the gr.Blocks being built. `generated`: the Generate tab's gr.State of the
    page's latest Run, whose finished runs the tab offers; `workspace`: the work behind the tab
    (default: `EditWorkspace(runner)`). Edits and feature distillation share the `work` concurrency
    id with the Generate tab's runs."""
    import gradio as gr

    workspace = workspace or EditWorkspace(runner)
    limits = runner.limits

    def fail(error: InputError, asset: EditAsset | None = None):
        return gr.Error(workspace.public(str(error), asset), print_exception=False)

    def remember(session, run):
        workspace.remember_run(session, run)
        return session

    def refresh(session, label):
        """The page's assets; the latest one picked (its source prompt filled in) unless one is picked."""
        choices = workspace.choices(session)
        if label in choices or not choices:
            return gr.update(choices=choices, value=label), gr.skip()
        session.selection = None
        return gr.update(choices=choices, value=choices[-1]), session.assets[choices[-1]].source_prompt

    def pick(session, label):
        try:
            asset = workspace.asset(session, label)
        except InputError as error:
            raise fail(error) from None
        session.selection = None
        return asset.source_prompt, None, f"Picked **{asset.label}**. Type a region to see it, or an edit prompt."

    def upload(session, path):
        if not path:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            asset = workspace.import_upload(session, path)
        except InputError as error:
            raise fail(error) from None
        note = f"Uploaded **{asset.label}**. Type its source prompt: what it shows now."
        return gr.update(choices=list(session.assets), value=asset.label), "", None, note

    def show_selection(session, label, query, source_prompt, progress=gr.Progress(track_tqdm=True)):
        picked = None
        try:
            picked = workspace.asset(session, label)
            if not workspace.has_features(session, label):
                yield "Distilling a feature field for text queries (once per asset)…", gr.skip()
            mask, image = workspace.select(session, label, query, source_prompt)
        except InputError as error:
            raise fail(error, picked) from None
        yield selection_text(mask, session.selection[1]), image

    def run_edit(session, label, query, source_prompt, prompt, guidance, steps, seed, prior, request: gr.Request,
                 progress=gr.Progress(track_tqdm=True)):
        picked = None
        try:
            picked = workspace.asset(session, label)
            config = workspace.edit_config(session, label, source_prompt, prompt, guidance, steps, seed, prior)
            mask = None
            if " ".join(str(query or "").split()):
                if not workspace.has_features(session, label):
                    yield ("Distilling a feature field for the region (once per asset)…", gr.skip(), gr.skip(),
                           gr.skip(), gr.skip())
                mask = workspace.region_mask(session, label, query, source_prompt)
                yield (selection_text(mask, session.selection[1]) + " Editing this region…", session.selection[3],
                       gr.skip(), gr.skip(), gr.skip())
            job = workspace.start(session, label, config, mask, owner=request.session_hash)
        except InputError as error:
            raise fail(error, picked) from None
        from sds3d.scope import scope_note

        note = scope_note(config.prompt, workspace.prior_model(config.prior))
        if note:
            gr.Warning(note)
        try:
            yield progress_text(job), gr.skip(), None, None, gr.skip()
            while not job.finished.wait(POLL_SECONDS):
                progress((job.step, job.config.steps), desc=progress_text(job).replace("**", ""))
                yield progress_text(job), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        finally:
            if not job.finished.is_set():  # the page went away mid-edit
                job.stop()
        if job.error:
            raise gr.Error(job.error, print_exception=False)
        workspace.finish(session, job)
        comparison = job.dir / "before_after.png"  # 8 views: the source on the top row, the edit below
        yield (result_text(job), gr.skip(), str(comparison) if comparison.is_file() else None,
               [str(path) for path in job.files()], gr.update(choices=list(session.assets)))

    def stop(request: gr.Request):
        if workspace.stop(request.session_hash):
            gr.Info("Stopping the edit after the current step; the partial edit will be shown.")
        else:
            gr.Warning("No edit is running.")

    default_steps = min(EditConfig.steps, limits.max_steps)
    with gr.Tab("Edit", id="edit", elem_id="edit-tab") as tab:
        gr.Markdown("Edit a finished asset: pick a run of this page or upload a 3DGS `.ply` or a `.glb` mesh, "
                    "select a region by text (or leave it empty for the whole asset), then describe the change.")
        with gr.Row():
            with gr.Column(scale=2):
                asset = gr.Dropdown([], value=None, label="Asset", elem_id="edit-asset",
                                    info="finished runs, uploads and edits of this page")
                upload_box = gr.File(label="…or upload a 3DGS .ply or a .glb mesh", file_types=list(UPLOAD_SUFFIXES),
                                     type="filepath", height=110, elem_id="edit-upload")
                with gr.Row():
                    query = gr.Textbox(label="Region (text query)", placeholder="the handle",
                                       max_length=limits.max_prompt_chars, scale=3, elem_id="edit-query",
                                       info="empty: the whole asset")
                    select_button = gr.Button("Show selection", scale=1, elem_id="edit-select")
                source_prompt = gr.Textbox(label="Source prompt: what the asset shows now", placeholder="a red mug",
                                           max_length=limits.max_prompt_chars, elem_id="edit-source")
                prompt = gr.Textbox(label="Edit prompt: what it should become", placeholder="a blue mug",
                                    max_length=limits.max_prompt_chars, elem_id="edit-prompt")
                with gr.Row():
                    guidance = gr.Dropdown(list(EDIT_SCORES), value=EditConfig.guidance, label="Guidance",
                                           info="pds keeps identity best; sds is the baseline",
                                           elem_id="edit-guidance")
                    steps = gr.Slider(1, limits.max_steps, value=default_steps, step=1, label="Steps",
                                      elem_id="edit-steps")
                with gr.Accordion("Advanced settings", open=False):
                    seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=limits.max_seed)
                    prior = gr.Dropdown(list(workspace.priors), value=next(iter(workspace.priors)), label="Prior",
                                        info="offered by this server")
                with gr.Row():
                    edit_button = gr.Button("Edit", variant="primary", elem_id="edit-run")
                    stop_button = gr.Button("Stop", variant="stop", elem_id="edit-stop")
            with gr.Column(scale=3):
                status = gr.Markdown("Pick an asset to edit.", elem_id="edit-status")
                selection = gr.Image(label="Selection (orange)", interactive=False, height=200,
                                     elem_id="edit-selection")
                comparison = gr.Image(label="Before (top) and after (bottom); turntables in before_after.gif",
                                      type="filepath", interactive=False, height=260, elem_id="edit-compare")
                files = gr.File(label="Downloads", file_count="multiple", interactive=False,
                                elem_id="edit-downloads")
        session = gr.State(EditSession())

    if generated is not None:
        generated.change(remember, [session, generated], session, queue=False, api_visibility="private")
    tab.select(refresh, [session, asset], [asset, source_prompt], queue=False, api_visibility="private")
    asset.input(pick, [session, asset], [source_prompt, selection, status], queue=False, api_visibility="private")
    upload_box.upload(upload, [session, upload_box], [asset, source_prompt, selection, status],
                      api_name="edit_upload")
    for trigger, name in ((select_button.click, "edit_select"), (query.submit, None)):
        trigger(show_selection, [session, asset, query, source_prompt], [status, selection], concurrency_limit=concurrency,
                concurrency_id="work", show_progress_on=[status], api_name=name,
                api_visibility="public" if name else "private")
    edit_button.click(run_edit, [session, asset, query, source_prompt, prompt, guidance, steps, seed, prior],
                      [status, selection, comparison, files, asset], concurrency_limit=concurrency,
                      concurrency_id="work", show_progress_on=[status], api_name="edit")
    stop_button.click(stop, None, None, queue=False, api_name="edit_stop")
    return workspace


__all__ = ["DOWNLOADS", "EditAsset", "EditJob", "EditSession", "EditWorkspace", "add_edit_tab", "progress_text",
           "result_text", "selection_text"]
