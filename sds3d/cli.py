"""The `sds3d` command line. Errors are one-line messages with exit code 2, never tracebacks."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

from .commands import add_commands
from .errors import InputError, first_line


class UsageError(InputError):
    """Bad command-line input: printed as one line, exit code 2."""


def _number(kind: type, low: float | None = None, high: float | None = None):
    """An argparse type: a finite `kind` (int or float), at least `low` and at most `high` when given;
    anything else is one usage line naming the range."""
    wanted = "a finite number" if low is None else f"at least {low}" if high is None else f"between {low} and {high}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not ((kind is int or math.isfinite(value)) and (low is None or value >= low)
                and (high is None or value <= high)):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value
    return parse


# ranges of flags, spelled out so that parsing imports no torch: sds3d.validation's MAX_SEED and its
# turntable_frames / turntable_resolution (tests/test_cli.py keeps them equal)
SEED = _number(int, 0, 2**64 - 1)
FRAMES = _number(int, 1, 1000)
IMAGE_SIZE = _number(int, 8, 2048)


def _output_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write to output directory {out}: {error.strerror or error}") from None
    return out


def cmd_demo(args) -> int:
    """Micro-world object -> surface Gaussians -> turntable GIF, preview grid and 3DGS PLY."""
    import torch

    from sds3d.representations import Gaussians, GaussiansConfig
    from .turntable import image_grid, render_turntable, save_animation, save_png
    from .world import COLORS, KINDS, make_object

    if args.kind not in KINDS:
        raise UsageError(f"unknown kind {args.kind!r}; choose one of: {', '.join(sorted(KINDS))}")
    if args.color not in COLORS:
        raise UsageError(f"unknown colour {args.color!r}; choose one of: {', '.join(COLORS)}")
    out = _output_dir(args.out)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    mesh = make_object(args.kind, args.color).mesh
    gaussians = Gaussians.from_mesh(mesh, args.points, GaussiansConfig(init_opacity=0.9), seed=args.seed)
    with torch.no_grad():  # flat discs would need orientation; small isotropic blobs cover the surface
        gaussians.params["scales"].clamp_(max=torch.log(torch.tensor(0.02)).item())
    frames = render_turntable(gaussians, n_frames=args.frames, resolution=args.resolution)
    save_animation(frames, out / "turntable.gif")
    save_png(image_grid(frames[:: max(1, len(frames) // 8)][:8], columns=4), out / "preview.png")
    gaussians.save_ply(out / "asset.ply")
    metrics = {"kind": args.kind, "color": args.color, "gaussians": len(gaussians),
               "seconds": round(time.perf_counter() - start, 2)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"wrote {out / 'turntable.gif'}, {out / 'preview.png'}, {out / 'asset.ply'}")
    print(json.dumps(metrics))
    return 0


def generate_config(args):
    """The GenerateConfig that `sds3d generate` flags describe: defaults, or --config, or with --resume the
    run's own config.json; then --preset, the flags and every --set in order. Nothing is written."""
    from .config import apply_override, load_json
    from .generate import GenerateConfig
    from .presets import apply_preset
    from .prompts import slug
    from .validation import PARTICLE_GUIDANCE, check_particles

    config = load_json(GenerateConfig, args.config) if args.config else GenerateConfig()
    prompt = args.prompt if args.prompt is not None else config.prompt
    out = Path(args.out or (config.out if args.config else f"runs/{slug(prompt)}"))
    if args.resume and not args.config and (out / "config.json").is_file():
        config = load_json(GenerateConfig, out / "config.json")  # flags below may only extend it (steps, ...)
        prompt = args.prompt if args.prompt is not None else config.prompt
    for preset in args.preset or []:
        config = apply_preset(config, preset)
    if args.representation is not None:  # first: the prior, steps and views it is tuned with come along
        config = config.with_representation(args.representation)  # an alias becomes its name
    flags = {name: getattr(args, name) for name in ("negative_prompt", "init_from", "guidance", "prior", "steps",
                                                    "seed", "device", "turntable_format")
             if getattr(args, name) is not None}
    config = dataclasses.replace(config, prompt=prompt, out=str(out), **flags)
    for assignment in args.set or []:
        config = apply_override(config, assignment)
    config = dataclasses.replace(config, retrieval=retrieval_settings(args, config.retrieval))
    if args.particles is not None:
        check_particles(config.guidance, args.particles)
        section = config.guidance if config.guidance in PARTICLE_GUIDANCE else "vsd"
        getattr(config, section).particles = args.particles
    return config


def retrieval_settings(args, settings):
    """`settings` (a RetrievalConfig) with the retrieval flags applied; UsageError for --retrieve-k,
    --adapt / --no-adapt, --no-init or --retrieve-optional without a library (--retrieve or retrieval.library)."""
    adapt_flag = {True: "--adapt", False: "--no-adapt", None: ""}[args.adapt]
    given = [flag for flag, value in (("--retrieve-k", args.retrieve_k is not None),
                                      (adapt_flag, args.adapt is not None), ("--no-init", args.no_init),
                                      ("--retrieve-optional", args.retrieve_optional))
             if value]
    if given and not (args.retrieve or settings.library):
        raise UsageError(f"{', '.join(given)} given without --retrieve LIB (an asset library to retrieve from)")
    changes = {"library": args.retrieve, "k": args.retrieve_k, "adapt": args.adapt,
               "init": False if args.no_init else None, "optional": True if args.retrieve_optional else None}
    return dataclasses.replace(settings, **{key: value for key, value in changes.items() if value is not None})


def cmd_generate(args) -> int:
    """Text -> 3D asset in a run directory (see sds3d.generate for its contents)."""
    from .generate import generate
    from .monitor import quiet
    from .run_folder import ReplacedRunWarning, choose_run_folder
    from .scope import OutsideWorldWarning, scope_note
    from .validation import validate_config

    config = generate_config(args)
    validate_config(config)
    out, note = choose_run_folder(config.out, default=not args.out, resume=args.resume)
    if note:
        print(f"sds3d: note: {note}", file=sys.stderr)
    config = dataclasses.replace(config, out=str(out))
    if args.quiet:
        quiet()
    try:
        note = scope_note(config.prompt, config.prior)
        if note:
            print(f"sds3d: note: {note}", file=sys.stderr)
        with warnings.catch_warnings():  # the notes above are the warnings' one lines
            warnings.simplefilter("ignore", OutsideWorldWarning)
            warnings.simplefilter("ignore", ReplacedRunWarning)
            result = generate(config, resume=args.resume, progress=not args.quiet)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error).splitlines()[0]) from None
    except KeyboardInterrupt:
        if (out / "checkpoint.pt").is_file():
            print(f"sds3d: interrupted; `sds3d generate --out {out} --resume` continues from the last checkpoint "
                  f"(every {config.checkpoint_every} steps)", file=sys.stderr)
            return 130
        raise
    print(f"wrote {result.out}/{result.metrics['asset']}, turntable.{config.turntable_format}, preview.png, metrics.json")
    if len(result.particles) > 1:
        print(f"wrote particles 1..{len(result.particles) - 1} to {result.out}/particle_<i>/, overview particles.png")
    print(json.dumps(result.metrics))
    return 0


def cmd_batch(args) -> int:
    """Every line of a prompts file a run (see sds3d.batch), on Ray or in this process; JSON summary last."""
    from .batch import default_threads, print_notes, read_prompts, run_batch, summary
    from .config import apply_override, load_json
    from .generate import GenerateConfig
    from .monitor import quiet
    from .presets import apply_preset

    config = load_json(GenerateConfig, args.config) if args.config else GenerateConfig()
    for preset in args.preset or []:
        config = apply_preset(config, preset)
    for assignment in args.set or []:
        config = apply_override(config, assignment)
    items = read_prompts(args.prompts, args.out, config)
    print_notes(items)
    if args.quiet:
        quiet()
    start = time.perf_counter()
    threads = default_threads(args.workers) if args.threads_per_run is None else args.threads_per_run
    records = run_batch(items, args.out, args.workers, threads, args.address, progress=not args.quiet)
    result = summary(records, time.perf_counter() - start)
    out = Path(args.out)
    print(f"wrote {out / 'batch.jsonl'}, {out / 'contact_sheet.png'} and {len(records)} run folders")
    if result["failed"]:
        print(f"sds3d: {result['failed']} of {len(records)} runs failed; batch.jsonl says why", file=sys.stderr)
    print(json.dumps(result))
    return 1 if result["failed"] else 0


def _load_run(run_dir: str, particle: int = 0):
    """-> (run directory, its GenerateConfig, its representation (that particle's) from the checkpoint);
    for an asset file (a 3DGS .ply, a .glb / .gltf / .obj mesh) -> (the file, None, its representation)."""
    from .generate import StoppedRunWarning, load_run

    if Path(run_dir).is_file():
        from .scene.load import read_asset

        if particle != 0:
            raise UsageError(f"--particle {particle}: {run_dir} is one asset file, not a run with particles")
        return Path(run_dir), None, read_asset(run_dir)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StoppedRunWarning)
            config, representation = load_run(run_dir, particle)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None
    for warning in caught:
        if issubclass(warning.category, StoppedRunWarning):
            print(f"sds3d: note: {warning.message}", file=sys.stderr)
        else:
            warnings.warn(warning.message, warning.category, stacklevel=2)
    return Path(run_dir), config, representation


def _particle_dir(run: Path, particle: int) -> Path:
    """Where a particle's files live: the run directory for particle 0, else run/particle_<i>/; beside
    an asset file, the file's folder."""
    if run.is_file():
        return run.parent
    directory = run if particle == 0 else run / f"particle_{particle}"
    directory.mkdir(exist_ok=True)  # a crashed run has no particle folders yet
    return directory


def cmd_render(args) -> int:
    """Turntable of a finished run."""
    from .turntable import animation_format, render_turntable, save_animation

    run, _, asset = _load_run(args.run_dir, args.particle)
    default = f"{run.stem + '_' if run.is_file() else ''}turntable_{args.resolution}.{args.format}"
    out = Path(args.out) if args.out else _particle_dir(run, args.particle) / default
    try:
        animation_format(out)
    except ValueError as error:
        raise UsageError(str(error)) from None
    _output_dir(str(out.parent))  # both checked before the frames are rendered
    save_animation(render_turntable(asset, args.frames, args.resolution, elevation=args.elevation), out)
    print(f"wrote {out}")
    return 0


# choices of `sds3d export`, spelled out so that parsing imports no torch: sds3d.axes.UP_AXES and
# sds3d.representations.convert.SURFACE_METHODS (tests/test_export_cli.py keeps them equal)
EXPORT_UP_AXES = ("-y", "+y", "+z")
EXPORT_METHODS = ("marching-cubes", "poisson", "tsdf")


def cmd_export(args) -> int:
    """Export a run's asset; the format follows the output suffix: for 3D Gaussians .ply (3DGS),
    .splat or .compressed.ply; from any representation a mesh with a baked UV texture, .glb or .obj
    (+ .mtl + .png), +Y up."""
    from sds3d.representations import Gaussians

    run, _, asset = _load_run(args.run_dir, args.particle)
    out = Path(args.out)
    name = out.name.lower()
    splat = name.endswith((".splat", ".compressed.ply"))
    if not (splat or out.suffix.lower() in (".ply", ".glb", ".obj")):
        raise UsageError(f"unsupported export format {out.suffix or '(none)'!r}; use .ply, .splat, .compressed.ply, "
                         ".glb or .obj")
    if out.suffix.lower() in (".ply", ".splat") and not isinstance(asset, Gaussians):
        raise UsageError(f"{run} holds a {type(asset).__name__}, not 3D Gaussians; export .glb or .obj")
    _output_dir(str(out.parent))
    try:
        if splat:
            asset.save_splat(out, up=args.up)
        elif out.suffix.lower() == ".ply":
            asset.save_ply(out, up=args.up, sh_degree=args.sh_degree)
        else:
            from .export import export_textured

            export_textured(asset, out, texture_size=args.texture_size, resolution=args.resolution,
                            max_faces=args.max_faces, method=args.method, progress=not args.quiet)
    except (ImportError, ValueError) as error:
        raise UsageError(str(error).splitlines()[0]) from None
    print(f"wrote {out}")
    return 0


def cmd_eval(args) -> int:
    """Evaluator scores and Chamfer distance of a finished run; JSON on the last line."""
    from .evaluate import evaluate_asset
    from .world import parse_problem

    run, config, asset = _load_run(args.run_dir, args.particle)
    prompt = args.prompt or (config.prompt if config is not None else None)
    if prompt is None:
        raise UsageError(f"{run} is an asset file: give the prompt it should show, e.g. --prompt \"a red mug\"")
    scores = evaluate_asset(asset, prompt)
    if not scores:
        print(f"sds3d: prompt {prompt!r} {parse_problem(prompt)}; nothing to score", file=sys.stderr)
    eval_path = run.with_name(f"{run.stem}_eval.json") if run.is_file() else _particle_dir(run, args.particle) / "eval.json"
    eval_path.write_text(json.dumps(scores, indent=2))
    print(json.dumps(scores))
    return 0


def cmd_sample(args) -> int:
    """Grid of images drawn from the embedded prior for one prompt."""
    import numpy as np
    from PIL import Image

    from sds3d.guidance.priors.embedded_prior import load_embedded_prior, sample
    from sds3d.guidance.priors.prior_type import shipped_prior_dir
    from .monitor import quiet
    from .prompts import validate_prompt
    from .scope import scope_note
    from .turntable import image_grid, save_png

    try:
        prompt = validate_prompt(args.prompt)
    except ValueError as error:
        raise UsageError(str(error)) from None
    out = Path(args.out)
    if Image.registered_extensions().get(out.suffix.lower()) not in Image.SAVE:
        raise UsageError(f"--out {out}: not an image file name; give one such as samples.png")
    _output_dir(str(out.parent))
    note = scope_note(prompt, "embedded")
    if note:
        print(f"sds3d: note: {note}", file=sys.stderr)
    if args.quiet:
        quiet()
    try:
        unet, scheduler = load_embedded_prior(shipped_prior_dir(args.prior) or args.prior)
        if args.steps > scheduler.config.num_train_timesteps:
            raise UsageError(f"--steps must be at most {scheduler.config.num_train_timesteps} (the prior's "
                             f"training timesteps), got {args.steps}")
        images = sample([prompt], n=args.n, guidance_scale=args.guidance_scale,
                        view_guidance_scale=args.view_guidance_scale, steps=args.steps, seed=args.seed,
                        unet=unet, scheduler=scheduler)
    except FileNotFoundError as error:
        raise UsageError(str(error).splitlines()[0]) from None
    grid = image_grid((images.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8))
    save_png(np.kron(grid, np.ones((args.zoom, args.zoom, 1), dtype=np.uint8)), out)
    print(f"wrote {out}")
    return 0


def cmd_world(args) -> int:
    """The kinds and colours the embedded prior knows."""
    from .scope import world_summary

    print(world_summary())
    return 0


def cmd_app(args) -> int:
    """The web UI (sds3d.app); blocks until Ctrl+C."""
    from sds3d.app.server import launch

    try:
        launch(args)
    except (ValueError, OSError) as error:
        raise UsageError(str(error)) from None
    return 0


def cmd_config(args) -> int:
    """Every config field (or those under a section) with its type, default and description; or the presets."""
    from .config import get_field
    from .config_docs import field_table
    from .generate import GenerateConfig
    from .presets import load_preset, preset_fields, preset_names

    if args.presets and args.section:  # one preset: each field it sets, against the default (of its representation)
        preset = load_preset(args.section)
        fields = preset_fields(preset)
        defaults = GenerateConfig(representation=dict(fields).get("representation", GenerateConfig.representation))
        print(f"{args.section}: {preset['description']}")
        for path, value in fields:
            default = GenerateConfig.representation if path == "representation" else get_field(defaults, path)
            print(f"    {path} = {json.dumps(value)}  (default {json.dumps(default)})")
        return 0
    if args.presets:
        for name in preset_names():
            preset = load_preset(name)
            print(f"{name}: {preset['description']}\n    sets {json.dumps(preset['set'])}")
        return 0
    head, _, rest = (args.section or "").partition(".")
    section = ".".join(filter(None, [GenerateConfig.FIELD_ALIASES.get(head, head), rest]))  # "mesh" -> "dmtet"
    rows = [row for row in field_table(GenerateConfig())
            if not section or row[0] == section or row[0].startswith(section + ".")]
    if not rows:
        raise UsageError(f"no config field or section {args.section!r}; `sds3d config` lists them")
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for path, kind, default, description in rows:
        default = default if len(default) <= 40 else default[:37] + "..."
        print(f"{path:<{widths[0]}}  {kind:<{widths[1]}}  {default}  # {description}")
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line and exit code 2, like every other error; a mistyped choice (a command,
    a --format) names the nearest valid one."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}{_did_you_mean(message)} (see {self.prog} --help)\n")


def _did_you_mean(message: str) -> str:
    """"; did you mean 'eval'?" for argparse's "invalid choice: 'evaluate' (choose from 'a', 'b')", else ""."""
    import difflib
    import re

    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not found:
        return ""
    choices = re.findall(r"'([^']*)'", found.group(2))
    typed = found.group(1)
    near = difflib.get_close_matches(typed, choices, n=1, cutoff=0.6) or [c for c in choices if typed.startswith(c)]
    return f"; did you mean '{near[0]}'?" if near else ""


class _ConfigDefaults(argparse.HelpFormatter):
    """`generate --help` shows each flag's default from GenerateConfig, and the names --representation
    and --guidance take from their registries (all imported only to print help)."""

    def _get_help_string(self, action):
        from .config_docs import run_default_text
        from .generate import GenerateConfig
        from sds3d.guidance.registry import GUIDANCE
        from sds3d.representations.registry import ALIASES, REPRESENTATIONS

        registered = {"representation": [*REPRESENTATIONS, *(f"{old} (= {new})" for old, new in ALIASES.items())],
                      "guidance": list(GUIDANCE)}
        defaults = {**vars(GenerateConfig()), "particles": GenerateConfig().vsd.particles}
        text = action.help or ""
        if action.dest in registered:
            text += ": " + " | ".join(registered[action.dest])
        if run_default_text(action.dest):
            text += f" (default: the representation's: {run_default_text(action.dest)})"
        elif action.dest in defaults and "default" not in text:
            text += f" (default: {json.dumps(defaults[action.dest])})"
        return text


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .presets import preset_names

    parser = _Parser(prog="sds3d", description="Text-to-3D by score distillation, CPU-first.",
                     epilog='first run: sds3d generate "a red mug"; each command has its own --help')
    parser.add_argument("--version", action="version", version=f"sds3d {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="render a micro-world object as 3D Gaussians (turntable + PLY)")
    demo.add_argument("--kind", default="mug")
    demo.add_argument("--color", default="red")
    demo.add_argument("--points", type=_number(int, 1, 10**7), default=20000)
    demo.add_argument("--frames", type=FRAMES, default=24)
    demo.add_argument("--resolution", type=IMAGE_SIZE, default=128)
    demo.add_argument("--seed", type=SEED, default=0)
    demo.add_argument("--out", default="runs/demo")
    demo.set_defaults(func=cmd_demo)

    gen = commands.add_parser("generate", help="text to 3D asset by score distillation", formatter_class=_ConfigDefaults,
                              description="Text to 3D asset by score distillation. Flags override the config "
                                          "(defaults, --config or --preset); `sds3d config` lists every field.")
    gen.add_argument("prompt", nargs="?", help='e.g. "a red mug" (may come from --config instead)')
    gen.add_argument("--negative-prompt", dest="negative_prompt", help="what the asset should not look like")
    gen.add_argument("--representation", help="what is optimised")
    gen.add_argument("--init-from", dest="init_from", metavar="RUN_DIR",
                     help="start from a finished run's asset (e.g. --representation dmtet --init-from runs/coarse)")
    gen.add_argument("--guidance", help="the score distillation variant")
    gen.add_argument("--prior", help="'embedded-v2' (camera-conditioned), 'embedded-v3' (v2 following its camera "
                                     "more), 'embedded' (text only) or a model folder: "
                                     "Stable Diffusion, DeepFloyd IF or an embedded-prior export (told apart by its "
                                     "files)")
    gen.add_argument("--steps", type=int, help="optimisation steps")
    gen.add_argument("--seed", type=int, help="random seed (0 to 2^64-1)")
    gen.add_argument("--particles", type=int, metavar="N",
                     help="VSD and ReDream only: optimise N assets sharing one LoRA (particle_<i>/ and particles.png)")
    gen.add_argument("--device", help="auto | cpu | cuda")
    gen.add_argument("--out", help="run directory (default runs/<prompt>, or runs/<prompt>_2, _3, ... when that "
                                    "holds a run; a folder named here that holds a run is replaced)")
    gen.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    gen.add_argument("--config", help="a config.json (e.g. from an earlier run) to start from")
    gen.add_argument("--preset", action="append", metavar="NAME",
                     help=f"apply a shipped recipe before the flags: {', '.join(preset_names())} (`sds3d config "
                          f"--presets` says what each sets)")
    gen.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override any config field, e.g. --set sds.guidance_scale=30 (repeatable)")
    retrieval = gen.add_argument_group("retrieval (an asset library built with `sds3d library build`)")
    retrieval.add_argument("--retrieve", metavar="LIB",
                           help="retrieve assets like the prompt from LIB and start from them")
    retrieval.add_argument("--retrieve-k", dest="retrieve_k", type=int, metavar="K",
                           help="assets to retrieve (default: 3)")
    retrieval.add_argument("--adapt", action=argparse.BooleanOptionalAction, default=None,
                           help="adapt the prior on renders of the retrieved assets with a short LoRA, as ReDream "
                                "(default: only for --guidance redream; on the suite it cost more than the run "
                                "and gave no better shapes)")
    retrieval.add_argument("--no-init", dest="no_init", action="store_true",
                           help="start from the usual initialisation, not from the retrieved assets")
    retrieval.add_argument("--retrieve-optional", dest="retrieve_optional", action="store_true",
                           help="when nothing in the library is close to the prompt, run without retrieval "
                                "instead of failing")
    gen.add_argument("--quiet", action="store_true", help="no progress bars (model loading included)")
    gen.add_argument("--turntable-format", dest="turntable_format", choices=("gif", "mp4"),
                     help="turntable.gif or turntable.mp4 (H.264)")
    gen.set_defaults(func=cmd_generate)

    batch = commands.add_parser("batch", help="one run per line of a prompts file, on Ray or in this process",
                                description="One run per line of PROMPTS.txt (a prompt a line) or PROMPTS.jsonl "
                                            "(a JSON object a line: \"prompt\" and config fields), each in "
                                            "DIR/<prompt>/; DIR/batch.jsonl and DIR/contact_sheet.png sum them up. "
                                            "Finished runs are skipped, interrupted ones continue.")
    batch.add_argument("prompts", help="PROMPTS.txt or PROMPTS.jsonl")
    batch.add_argument("--out", required=True, metavar="DIR",
                       help="the batch folder (on a cluster: shared by every node)")
    batch.add_argument("--workers", type=int, default=1, metavar="N", help="runs at once (default 1; more need Ray)")
    batch.add_argument("--threads-per-run", dest="threads_per_run", type=int, metavar="T",
                       help="torch threads of each run (default: this machine's cores / N)")
    batch.add_argument("--address", help="a Ray cluster, e.g. ray://head:10001 or auto (default: local Ray)")
    batch.add_argument("--config", help="a config.json every line starts from")
    batch.add_argument("--preset", action="append", metavar="NAME", help="a shipped recipe for every line")
    batch.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a field for every line (repeatable)")
    batch.add_argument("--quiet", action="store_true", help="no progress bar")
    batch.set_defaults(func=cmd_batch)

    render = commands.add_parser("render", help="turntable GIF (or MP4) of a finished run or an asset file")
    render.add_argument("run_dir", help="a run directory, or a 3DGS .ply / .glb / .gltf / .obj file")
    render.add_argument("--particle", type=int, default=0, metavar="I",
                        help="which VSD particle of a run with several (default 0)")
    render.add_argument("--frames", type=FRAMES, default=36)
    render.add_argument("--resolution", type=IMAGE_SIZE, default=256)
    render.add_argument("--elevation", type=_number(float, -90, 90), default=15.0)
    render.add_argument("--format", choices=("gif", "mp4"), default="gif", help="when --out is not given")
    render.add_argument("--out")
    render.set_defaults(func=cmd_render)

    evaluate = commands.add_parser("eval", help="score a finished run (or an asset file) on the micro-world (JSON)")
    evaluate.add_argument("run_dir", help="a run directory, or a 3DGS .ply / .glb / .gltf / .obj file (with --prompt)")
    evaluate.add_argument("--particle", type=int, default=0, metavar="I",
                          help="which VSD particle of a run with several (default 0)")
    evaluate.add_argument("--prompt", default=None, help="what the asset should show (default: the run's prompt); "
                                                         "scores go to eval.json, or <file>_eval.json beside a file")
    evaluate.set_defaults(func=cmd_eval)

    draw = commands.add_parser("sample", help="sample a grid PNG from the embedded prior")
    draw.add_argument("prompt")
    draw.add_argument("--n", type=_number(int, 1, 1024), default=16)
    draw.add_argument("--guidance-scale", dest="guidance_scale", type=_number(float, 0), default=None,
                      help="classifier-free guidance scale (default: the prior's sampling default, 1.2)")
    draw.add_argument("--view-guidance-scale", dest="view_guidance_scale", type=_number(float, 0), default=None,
                      help="guidance on a view phrase such as 'back view', applied on top of the prompt without "
                           "it (default 4.0; for embedded-v2 / v3, which take the view as a camera, the "
                           "--guidance-scale; equal to --guidance-scale means plain CFG)")
    draw.add_argument("--steps", type=_number(int, 1), default=50, help="DDIM steps (at most the prior's training "
                                                                      "timesteps, 1000)")
    draw.add_argument("--prior", default="embedded",
                      help="'embedded' (default), 'embedded-v2' or 'embedded-v3' (camera-conditioned: a view phrase "
                           "sets the camera, without one the samples go round the object) or an embedded-prior "
                           "export folder")
    draw.add_argument("--seed", type=SEED, default=0)
    draw.add_argument("--zoom", type=_number(int, 1, 64), default=4, help="pixel repeat for viewing 32x32 samples")
    draw.add_argument("--out", default="samples.png")
    draw.add_argument("--quiet", action="store_true", help="no progress bars (model loading)")
    draw.set_defaults(func=cmd_sample)

    export = commands.add_parser("export", help="export a finished run's asset (.ply, .splat or .compressed.ply "
                                 "for Gaussians; .glb or .obj textured mesh)")
    export.add_argument("run_dir", help="a run directory, or a 3DGS .ply / .glb / .gltf / .obj file")
    export.add_argument("--particle", type=int, default=0, metavar="I",
                        help="which VSD particle of a run with several (default 0)")
    export.add_argument("--out", required=True)
    splats = export.add_argument_group("3D Gaussians (.ply, .splat, .compressed.ply)")
    splats.add_argument("--up", choices=EXPORT_UP_AXES, default="-y",
                        help="up axis in the file: -y (default; SuperSplat, antimatter15/splat, gsplat.js), "
                             "+y (glTF-style), +z (sds3d's world; gsplat's viewer)")
    splats.add_argument("--sh-degree", dest="sh_degree", type=int, choices=(0, 1, 2, 3),
                        help=".ply SH layout (default: the asset's); 3 for the original 3DGS loader")
    meshes = export.add_argument_group("textured mesh (.glb, .obj)")
    meshes.add_argument("--method", choices=EXPORT_METHODS, default="marching-cubes",
                        help="how Gaussians become a surface: marching cubes of their density (default), or "
                             "Poisson reconstruction / TSDF fusion of rendered depth (open3d)")
    meshes.add_argument("--texture-size", dest="texture_size", type=_number(int, 16, 16384), default=1024)
    meshes.add_argument("--max-faces", dest="max_faces", type=_number(int, 4), default=20000, help="decimation target")
    meshes.add_argument("--resolution", type=_number(int, 2, 1024), default=128,
                        help="meshing grid cells a side (NeRF, Gaussians)")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.set_defaults(func=cmd_export)

    from sds3d.app.server import add_arguments

    world = commands.add_parser("world", help="list the kinds and colours the embedded prior knows")
    world.set_defaults(func=cmd_world)

    config = commands.add_parser("config", help="list every config field: type, default, description")
    config.add_argument("section", nargs="?", help="only this field or section, e.g. sds or gaussians.densify "
                                                   "(with --presets: a preset's name)")
    config.add_argument("--presets", action="store_true",
                        help="list the presets and what they set (with a name: that preset, field by field)")
    config.set_defaults(func=cmd_config)

    app = add_arguments(commands.add_parser("app", help="start the web UI (needs the app extra)"))
    app.set_defaults(func=cmd_app)
    add_commands(commands)  # the commands in sds3d/commands/, one module each
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # plain `sds3d`: what it can do, not an error line
        parser.print_help()
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage mistake (one line, code 2)
        return done.code
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that has gone shows here, not as a traceback at exit
        return code
    except InputError as error:  # UsageError included
        print(f"sds3d: error: {first_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sds3d: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `sds3d config | head`: stop writing, quietly, as `cat` would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
