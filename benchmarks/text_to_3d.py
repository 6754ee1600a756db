"""Text-to-3D on the micro-world benchmark suite: one run per prompt, scored by the evaluator.

    python benchmarks/text_to_3d.py [--limit N] [--kinds a,b] [--representation gaussians] [--guidance sds]
                                    [--steps N] [--out runs/bench] [--preset NAME] [--set key=value ...]
                                    [--init-from-suite runs/bench]   # coarse -> fine: start each
                                    # prompt from its run in an earlier suite's output folder

Prompts: every micro-world kind once (28), colours cycled, seed 0, default settings. Prints one
line per prompt, writes a picture grid (`<out>/grid.png`: 4 views per prompt), and ends with JSON:
{"mean": {kind_acc, color_acc, janus_rate, shape_acc, chamfer, seconds}, "prompts": [{prompt, ...}, ...]}.
Janus rate is averaged over fronted kinds only; shape accuracy (`sds3d.shape_accuracy`, classifier-free)
is whether the asset's 3D shape is nearest its own kind's among all 28, with its rank per prompt.
`--prior DIR` runs the suite with another prior folder (e.g. the text-only v1 beside v2).
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from sds3d.config import apply_override
from sds3d.evaluate import evaluate_asset
from sds3d.generate import GenerateConfig, generate, load_run
from sds3d.presets import apply_preset
from sds3d.turntable import image_grid, render_turntable, save_png
from sds3d.world import COLORS, KINDS, canonical_caption


def suite(kinds: str | None = None) -> list[str]:
    """The 28 prompts; `kinds` ("chair,house") keeps those kinds' prompts (same colours)."""
    colors = list(COLORS)
    prompts = {kind: canonical_caption(kind, colors[(i * 3) % len(colors)]) for i, kind in enumerate(sorted(KINDS))}
    if kinds is None:
        return list(prompts.values())
    chosen = [k.strip() for k in kinds.split(",") if k.strip()]
    unknown = sorted(set(chosen) - set(prompts))
    if unknown:
        raise SystemExit(f"unknown kinds {', '.join(unknown)}; choose from {', '.join(prompts)}")
    return [prompts[k] for k in chosen]


def finished_run(config: GenerateConfig):
    """(representation, metrics) of a completed run of exactly this config in `config.out`, else
    (None, None): an interrupted suite re-runs only the prompts it had not finished."""
    out = Path(config.out)
    if not (out / "metrics.json").is_file() or not (out / "config.json").is_file():
        return None, None
    _, representation = load_run(out)
    metrics = json.loads((out / "metrics.json").read_text())
    written = json.loads((out / "config.json").read_text())  # as written: a run from before a setting lacks it
    if written != json.loads(json.dumps(asdict(config))) or metrics.get("steps") != config.steps:
        return None, None
    return representation, metrics


def run_and_score(config: GenerateConfig, prior, evaluator) -> tuple[dict, object]:
    """Generate (or reuse a finished run of exactly this config) and score it; -> (row, representation)."""
    representation, metrics = finished_run(config)
    if representation is None:
        result = generate(config, prior=prior, progress=False)
        representation, metrics = result.representation, result.metrics
    scores = evaluate_asset(representation, config.prompt, evaluator)
    row = {"prompt": config.prompt, "kind_acc": scores["kind_acc"], "color_acc": scores["color_acc"],
           "janus_rate": scores["janus_rate"], "shape_acc": scores["shape_acc"],
           "shape_rank": scores["shape_rank"], "shape_nearest": scores["shape_nearest"],
           "chamfer": round(scores["chamfer"], 4),
           "seconds": round(metrics["seconds"], 1), "time_breakdown": metrics["time_breakdown"]}
    return row, representation


def summary(rows: list[dict]) -> dict:
    """Means over the prompts (Janus over fronted kinds only), and the median seconds per run (when
    the rows have them)."""
    janus = [r["janus_rate"] for r in rows if r["janus_rate"] is not None]
    means = {"kind_acc": statistics.mean(r["kind_acc"] for r in rows),
             "color_acc": statistics.mean(r["color_acc"] for r in rows),
             "janus_rate": statistics.mean(janus) if janus else None,
             "shape_acc": statistics.mean(r["shape_acc"] for r in rows),
             "chamfer": statistics.mean(r["chamfer"] for r in rows)}
    if all("seconds" in r for r in rows):
        means["seconds"] = statistics.median(r["seconds"] for r in rows)
    return means


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--kinds", help="comma-separated subset of kinds, e.g. airplane,chair,house,snowman")
    parser.add_argument("--representation", default="gaussians")
    parser.add_argument("--guidance", default="sds")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--preset", action="append", default=[], metavar="NAME",
                        help="a shipped recipe (`sds3d config --presets`), applied before --steps and --set")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--init-from-suite", metavar="DIR",
                        help="an earlier suite's --out: each prompt starts from its run there (e.g. mesh from nerf)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--prior", help="prior: the representation's (default), embedded, embedded-v2 or a folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompts = suite(args.kinds)[: args.limit]
    from sds3d.guidance.registry import load_prior
    from sds3d.world.evaluator import Evaluator

    priors, evaluator = {}, Evaluator.load()  # each loaded once, by the name a config gives
    rows, pictures = [], []
    for prompt in prompts:
        run_name = prompt.replace(" ", "_")
        config = GenerateConfig(prompt=prompt, representation=args.representation, guidance=args.guidance,
                                seed=args.seed, out=str(Path(args.out) / run_name), prior=args.prior)
        for preset in args.preset:
            config = apply_preset(config, preset)
        if args.init_from_suite:
            config.init_from = str(Path(args.init_from_suite) / run_name)
        if args.steps:
            config.steps = args.steps
        for assignment in args.set:
            config = apply_override(config, assignment)
        if config.prior not in priors:
            priors[config.prior] = load_prior(config.prior)
        row, representation = run_and_score(config, priors[config.prior], evaluator)
        rows.append(row)
        pictures.append(render_turntable(representation, n_frames=4, resolution=64))
        print(json.dumps(row), flush=True)
    save_png(image_grid(np.concatenate(pictures), columns=8), Path(args.out) / "grid.png")
    print(json.dumps({"mean": summary(rows), "prompts": rows}))


if __name__ == "__main__":
    main()
