"""The page: a gr.Blocks whose Generate handler starts a `Runner` job and streams its progress."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from sds3d.generate import GenerateConfig, particle_count
from sds3d.guidance.registry import GUIDANCE
from sds3d.representations.registry import REPRESENTATIONS
from sds3d.retrieval.run import RetrievalConfig
from sds3d.world import canonical_caption

from .edit_tab import add_edit_tab
from .runner import InputError, Run, Runner, RunRequest, Snapshot, default_guidance_scale, tuned_prior

CSS = "#turntable img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"
POLL_SECONDS = 0.5  # how often a running job's snapshot is sent to the page
EXAMPLES = (("mug", "red"), ("chair", "blue"), ("snowman", "white"), ("rocket", "orange"), ("house", "yellow"),
            ("tree", "green"), ("car", "purple"), ("lamp", "pink"))
SCORE_LABELS = (("kind_acc", "kind accuracy"), ("color_acc", "colour accuracy"), ("janus_rate", "Janus rate"),
                ("chamfer", "Chamfer distance"), ("shape_acc", "shape accuracy (3D, classifier-free)"))


def example_prompts() -> list[str]:
    """Micro-world captions: prompts the embedded prior knows and the evaluator can score."""
    return [canonical_caption(kind, color) for kind, color in EXAMPLES]


def progress_text(snapshot: Snapshot) -> str:
    if snapshot.step == 0:
        return "Starting…"
    eta = "ETA …" if snapshot.eta is None else f"ETA {snapshot.eta:.0f} s"
    loss = "" if snapshot.loss is None else f" · loss {snapshot.loss:.4g}"
    return f"**Step {snapshot.step}/{snapshot.total}** · {snapshot.elapsed:.0f} s elapsed · {eta}{loss}"


def final_text(run: Run) -> str:
    snapshot = run.snapshot()
    if run.stop_requested.is_set() and snapshot.step < snapshot.total:
        return (f"**Stopped at step {snapshot.step}/{snapshot.total}** after {snapshot.elapsed:.0f} s; "
                "the partial result is below.")
    particles = particle_count(run.config)
    extra = (f" {particles} particles: particle 0 is shown; all are in the downloads (particles.png side by side)."
             if particles > 1 else "")
    return f"**Done: {snapshot.total} steps** in {snapshot.elapsed:.0f} s." + extra


def scores_text(scores: dict) -> str:
    if not scores:
        return ("No evaluator scores: they need a micro-world prompt naming one colour and one object kind, "
                "such as the examples.")
    rows = "\n".join(f"| {label} | {'—' if scores[key] is None else f'{scores[key]:.3f}'} |"
                     for key, label in SCORE_LABELS)
    title = f"Evaluator scores for a **{scores['color']} {scores['kind']}** (16 views):"
    nearest = (f"\n\nNearest 3D shape: **{scores['shape_nearest'].replace('_', ' ')}** (rank of the prompted kind: "
               f"{scores['shape_rank']} of 28)." if "shape_nearest" in scores else "")
    return f"{title}\n\n| score | value |\n|---|---|\n{rows}{nearest}"


def library_options(runner: Runner) -> list[tuple[str, str]]:
    """The retrieval library picker's (label, value) choices: "none" first, then the server's libraries."""
    return [("none", ""), *((name, name) for name in runner.libraries)]


def retrieval_view(run: Run) -> tuple[str | None, str]:
    """(the contact sheet of the retrieved assets or None, a Markdown table of their captions and
    scores) for a finished run; (None, "") for a run without retrieval."""
    record = run.retrieval
    if not record:
        return None, ""
    items = record.get("retrieved") or []
    if not items:
        return None, f"Nothing retrieved from **{run.library_name}**: {record.get('skipped', 'no match')}."
    library = Path(record["library"])
    rows = []
    for rank, item in enumerate(items, 1):
        path = Path(item["path"])
        file = path.relative_to(library).as_posix() if path.is_relative_to(library) else path.name
        rows.append(f"| {rank} | {item['caption']} | {file} | {item['text_score']:.3f} | {item['image_score']:.3f} |")
    adaptation = record.get("adaptation")
    uses = []
    if adaptation:
        uses.append("the prior was adapted on them (from the cache)" if adaptation.get("cached") else
                    f"the prior was adapted on them ({adaptation.get('seconds', 0):.0f} s)")
    if record.get("init"):
        uses.append("the run started from them")
    used = f"; {' and '.join(uses)}" if uses else ""
    sheet = run.dir / "retrieved.png"
    table = "| # | caption | file | text score | image score |\n|---|---|---|---|---|\n" + "\n".join(rows)
    return (str(sheet) if sheet.is_file() else None,
            f"Retrieved from **{run.library_name}**: {len(items)} asset(s){used}.\n\n{table}")


def _enlarge(image, size: int = 128):
    """Nearest-neighbour upscaling so 32-pixel renders stay crisp in the browser."""
    factor = max(1, size // image.shape[0])
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def build_ui(runner: Runner, concurrency: int = 1, queue_size: int = 16) -> gr.Blocks:
    """The Blocks app; `concurrency` runs execute at once, up to `queue_size` more wait in line."""
    limits = runner.limits
    default_steps = min(GenerateConfig().steps, limits.max_steps)

    retrieving = bool(runner.libraries)  # without libraries the page (and its API) has no retrieval fields

    def follow(run_request: RunRequest, request: gr.Request, progress: gr.Progress):
        """Starts the run and yields the outputs: status, renders, model, turntable, scores, [retrieved
        assets' sheet and table when the server offers libraries], files, the run."""
        def out(*values, retrieved=(gr.skip(), gr.skip())):
            return (*values[:5], *retrieved, *values[5:]) if retrieving else values

        try:
            run = runner.start(run_request, owner=request.session_hash)
        except InputError as error:
            raise gr.Error(str(error), print_exception=False) from None
        if run.note:
            gr.Warning(run.note)
        try:
            yield out(progress_text(run.snapshot()), None, None, None, "", None, run,
                      retrieved=(gr.update(value=None, visible=False), ""))
            while not run.finished.wait(POLL_SECONDS):
                snapshot = run.snapshot()
                progress((snapshot.step, snapshot.total), desc=progress_text(snapshot).replace("**", ""))
                renders = None if snapshot.renders is None else _enlarge(snapshot.renders)
                yield out(progress_text(snapshot), renders, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())
        finally:
            if not run.finished.is_set():  # the page went away mid-run (closed tab, lost connection)
                run.stop()
        if run.error:
            raise gr.Error(run.error, print_exception=False)
        asset = run.asset()
        sheet, table = retrieval_view(run)
        yield out(final_text(run), gr.skip(), asset and str(asset), str(run.dir / "turntable.gif"),
                  scores_text(run.scores), [str(path) for path in run.files()], gr.skip(),
                  retrieved=(gr.update(value=sheet, visible=sheet is not None), table))

    def generate(prompt, negative_prompt, representation, guidance, prior, steps, seed, guidance_scale, resolution,
                 particles, request: gr.Request, progress=gr.Progress()):
        yield from follow(RunRequest(prompt, negative_prompt, representation, guidance, prior, steps, seed,
                                     guidance_scale, resolution, particles), request, progress)

    def generate_retrieving(prompt, negative_prompt, representation, guidance, prior, steps, seed, guidance_scale,
                            resolution, particles, library, retrieve_k, adapt, init, request: gr.Request,
                            progress=gr.Progress()):
        yield from follow(RunRequest(prompt, negative_prompt, representation, guidance, prior, steps, seed,
                                     guidance_scale, resolution, particles, library, retrieve_k, adapt, init),
                          request, progress)

    def make_mesh(run: Run | None):
        if run is None:
            raise gr.Error("Generate an asset first; the mesh is made from it.", print_exception=False)
        try:
            return [str(path) for path in runner.mesh(run)]
        except InputError as error:
            raise gr.Error(str(error), print_exception=False) from None

    def stop(request: gr.Request):
        if runner.stop(request.session_hash):
            gr.Info("Stopping after the current step; the partial result will be shown.")
        else:
            gr.Warning("Nothing is running.")

    def representation_changed(representation):
        """The representation's tuned prior (when offered) and step count."""
        steps = min(GenerateConfig(representation=representation).steps, limits.max_steps)
        return gr.update(value=tuned_prior(runner.priors, representation)), gr.update(value=steps)

    def guidance_changed(guidance):
        scale = default_guidance_scale(guidance)
        info = "the variant's default" if scale is not None else "scheduled or none for this variant: leave empty"
        return gr.update(value=scale, info=info)

    with gr.Blocks(title="sds3d — text to 3D", analytics_enabled=False) as demo:
        gr.Markdown("# sds3d — text to 3D by score distillation\nType a prompt, press **Generate**, and watch "
                    "3D Gaussians take shape. The embedded prior knows the micro-world: the examples below.")
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Textbox(label="Prompt", placeholder="a red mug", max_length=limits.max_prompt_chars,
                                    elem_id="prompt")
                with gr.Row():
                    steps = gr.Slider(1, limits.max_steps, value=default_steps, step=1, label="Steps",
                                      elem_id="steps")
                    seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=limits.max_seed,
                                     elem_id="seed")
                with gr.Row():
                    run_button = gr.Button("Generate", variant="primary", elem_id="run")
                    stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
                gr.Examples(example_prompts(), inputs=[prompt], label="Micro-world prompts (scored by the evaluator)")
                with gr.Accordion("Advanced settings", open=False):
                    negative_prompt = gr.Textbox(label="Negative prompt", max_length=limits.max_prompt_chars)
                    representation = gr.Dropdown(list(REPRESENTATIONS), value=GenerateConfig.representation,
                                                 label="Representation")
                    guidance = gr.Dropdown(sorted(GUIDANCE), value=GenerateConfig.guidance, label="Guidance")
                    prior = gr.Dropdown(list(runner.priors), label="Prior",
                                        value=tuned_prior(runner.priors, GenerateConfig.representation),
                                        info="offered by this server; the representation's tuned one is picked "
                                             "with it", elem_id="prior")
                    guidance_scale = gr.Number(default_guidance_scale("sds"), label="Guidance scale",
                                               info="the variant's default", minimum=0,
                                               maximum=limits.max_guidance_scale)
                    resolution = gr.Dropdown(list(limits.resolutions), value=limits.resolutions[0],
                                             label="Render resolution during distillation")
                    particles = gr.Slider(1, limits.max_particles, value=1, step=1, label="Particles (VSD)",
                                          info="VSD only: several assets sharing one LoRA; each costs a full run")
                retrieval_inputs = []
                if retrieving:
                    with gr.Accordion("Retrieval", open=False):
                        retrieval_inputs = [
                            gr.Dropdown(library_options(runner), value="", label="Retrieval library",
                                        info="assets like the prompt, offered by this server", elem_id="library"),
                            gr.Number(RetrievalConfig.k, label="K: assets retrieved", precision=0, minimum=1,
                                      maximum=limits.max_retrieve_k, elem_id="retrieve-k"),
                            gr.Checkbox(False, label="adapt the prior", elem_id="adapt",
                                        info="a LoRA trained on renders of the retrieved assets (redream "
                                             "always adapts)"),
                            gr.Checkbox(RetrievalConfig.init, label="start from the retrieved assets",
                                        elem_id="init")]
            with gr.Column(scale=3):
                status = gr.Markdown("Ready.", elem_id="status")
                renders = gr.Image(label="Latest renders", interactive=False, height=160, elem_id="renders")
                with gr.Row():
                    model = gr.Model3D(label="3D asset (drag to orbit)", interactive=False, height=360,
                                       elem_id="model3d")
                    turntable = gr.Image(label="Turntable", type="filepath", interactive=False, height=360,
                                         elem_id="turntable")
                retrieval_outputs = []
                if retrieving:
                    with gr.Row():
                        retrieval_outputs = [
                            gr.Image(label="Retrieved assets", type="filepath", interactive=False, visible=False,
                                     elem_id="retrieved"),
                            gr.Markdown("", elem_id="retrieved-table")]
                scores = gr.Markdown("", elem_id="scores")
                files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
                mesh_button = gr.Button("Make a mesh: GLB and OBJ downloads", elem_id="mesh")
        last_run = gr.State(None)  # the page's latest Run, kept on the server

        guidance.change(guidance_changed, guidance, guidance_scale, queue=False)
        representation.change(representation_changed, representation, [prior, steps], queue=False)
        run_button.click(generate_retrieving if retrieving else generate,
                         [prompt, negative_prompt, representation, guidance, prior, steps, seed, guidance_scale,
                          resolution, particles, *retrieval_inputs],
                         [status, renders, model, turntable, scores, *retrieval_outputs, files, last_run],
                         concurrency_limit=concurrency, concurrency_id="work", show_progress_on=[status],
                         api_name="generate")
        # meshing takes seconds and memory like a run does, so it shares the runs' slots
        mesh_button.click(make_mesh, last_run, files, concurrency_limit=concurrency, concurrency_id="work",
                          api_name="mesh")
        stop_button.click(stop, None, None, queue=False, api_name="stop")
    with gr.Blocks(title="sds3d — text to 3D", analytics_enabled=False) as page:  # the Generate and Edit tabs
        with gr.Tab("Generate", id="generate", elem_id="generate-tab"):
            demo.render()
        add_edit_tab(runner, concurrency, generated=last_run)
    page.queue(max_size=queue_size)
    return page


def serve(demo: gr.Blocks, host: str, port: int, share: bool = False, allowed_paths: list[str] = (),
          block: bool = True) -> None:
    """Starts the server; `block=False` returns once it listens (tests), else it says where it listens
    (and how to share it, in command-line terms rather than gradio's) and runs until Ctrl+C."""
    demo.launch(server_name=host, server_port=port, share=share, ssr_mode=False, footer_links=[], css=CSS,
                allowed_paths=list(allowed_paths), prevent_thread_lock=True, quiet=True)
    if block:
        print(f"* Running on local URL:  {demo.local_url}", flush=True)
        if not share:
            print("* To create a public link, add --share: sds3d app --share", flush=True)
        demo.block_thread()
