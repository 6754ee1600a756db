"""`sds3d app` / `python -m sds3d.app`: flags, the run root and the priors on offer, then launch."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from sds3d.guidance.priors.prior_type import PRIOR_TYPES, prior_type

from .limits import Limits


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="(default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    parser.add_argument("--runs-dir", dest="runs_dir",
                        help="where each request gets its own run directory (default: a new temporary folder)")
    parser.add_argument("--prior", action="append", default=[], metavar="PATH_OR_HUB_ID",
                        help="offer this prior besides the shipped 'embedded', 'embedded-v2' and 'embedded-v3': a Stable "
                             "Diffusion, DeepFloyd IF or embedded-prior folder, told apart by its files (repeatable)")
    parser.add_argument("--libraries", metavar="DIR",
                        help="offer retrieval from the asset libraries in DIR's subfolders that have a built index "
                             "(`sds3d library build`), picked by folder name (default: none)")
    parser.add_argument("--adapted-priors", dest="adapted_priors", metavar="DIR", default="",
                        help="where priors adapted to retrieved assets are cached, shared by all runs (default: "
                             "$SDS3D_CACHE_DIR/adapted_priors, else ~/.cache/sds3d/adapted_priors)")
    parser.add_argument("--concurrency", type=int, default=1, help="runs executing at once (default 1)")
    parser.add_argument("--queue-size", dest="queue_size", type=int, default=16,
                        help="requests that may wait for a free slot (default 16)")
    parser.add_argument("--max-steps", dest="max_steps", type=int, default=Limits.max_steps,
                        help=f"largest step count a user may ask for (default {Limits.max_steps})")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return parser


def build_runner(args: argparse.Namespace):
    """-> Runner; ValueError with a one-line message for bad flags."""
    from .runner import Runner, library_choices, prior_choices

    for name in ("port", "concurrency", "queue_size", "max_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    priors = prior_choices(args.prior)
    libraries = library_choices(args.libraries)
    made = None if args.runs_dir else Path(tempfile.mkdtemp(prefix="sds3d-app-"))
    runs_dir = made or Path(args.runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create runs directory {runs_dir}: {error.strerror or error}") from None
    if not os.access(runs_dir, os.W_OK):
        raise ValueError(f"cannot write to runs directory {runs_dir}")
    try:
        return Runner(runs_dir, priors, Limits(max_steps=args.max_steps), device=args.device,
                      slots=args.concurrency, libraries=libraries, adapted_priors=args.adapted_priors)
    except (OSError, ValueError) as error:
        if made is not None:
            made.rmdir()
        raise ValueError(f"cannot load a prior: {(str(error).splitlines() or [type(error).__name__])[0]}") from None


def served_paths(runs_dir: Path) -> list[str]:
    """gradio copies results into its own cache before serving them, but only from the working
    directory, the temp directory or `allowed_paths`; a runs directory elsewhere must be listed."""
    runs_dir = runs_dir.resolve()
    inside = (Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve())
    return [] if any(runs_dir.is_relative_to(root) for root in inside) else [str(runs_dir)]


def launch(args: argparse.Namespace) -> None:
    """Blocks until the server is stopped (Ctrl+C)."""
    try:
        from .ui import build_ui, serve
    except ImportError as error:
        raise ValueError(f"the web UI needs gradio ({error}); install it with: pip install -e \".[app]\"") from None
    runner = build_runner(args)
    offered = ", ".join(name if spec == "embedded" else f"{name} ({PRIOR_TYPES[prior_type(spec)]})"
                        for name, spec in runner.priors.items())
    libraries = f"; libraries on offer: {', '.join(runner.libraries)}" if runner.libraries else ""
    print(f"sds3d app: runs go to {runner.runs_dir}; priors on offer: {offered}{libraries}", flush=True)
    demo = build_ui(runner, concurrency=args.concurrency, queue_size=args.queue_size)
    serve(demo, args.host, args.port, share=args.share, allowed_paths=served_paths(runner.runs_dir))


def main(argv: list[str] | None = None) -> int:
    args = add_arguments(argparse.ArgumentParser(prog="sds3d app", description="The sds3d web UI.")).parse_args(argv)
    try:
        launch(args)
    except (ValueError, OSError) as error:  # bad flags, missing gradio, port in use
        print(f"sds3d app: error: {error}", file=sys.stderr)
        return 2
    return 0
