"""VSD particles against VSD seeds: one run with n particles sharing one LoRA, or n independent runs?

    python benchmarks/vsd_particles.py [--prompts 3] [--particles 3] [--steps 600] [--threads 2]
                                       [--out runs/vsd_particles] [--results benchmarks/results/guidance_table]

For the first `--prompts` prompts of the micro-world suite (the guidance table's diversity prompts),
one VSD run (seed 0, the guidance table's settings otherwise) with `--particles` particles. Each particle is scored by the
evaluator (kind and colour accuracy over 16 views), and the particles' diversity is measured as the
guidance table measures the diversity of seeds: the mean over pairs and views of 1 - cos between the
evaluator's features. The comparison is the guidance table's recorded VSD runs of the same prompts,
seeds 0..n-1 (read from its committed results, so it costs nothing here). An interrupted run continues from its
checkpoint; a finished one is read back. Writes `<out>/grid.png` (per prompt: the particles' front
views, then the seeds'), and prints one JSON line per prompt, then the summary as JSON last, with
the cost ratio measured in this process: seconds per step of `--cost-steps` steps with n particles
over the same with one (the first prompt; no previews or checkpoints).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from sds3d.evaluate import evaluate_asset, evaluation_cameras, render_for_evaluator
from sds3d.generate import generate, load_run
from sds3d.guidance.registry import load_prior
from sds3d.guidance.vsd import VSDConfig
from sds3d.turntable import image_grid, render_turntable, save_png

from guidance_table import RESULTS, Ledger, pairwise_feature_distance, run_id, table_config
from text_to_3d import suite

TABLE_STEPS = table_config().steps  # the guidance table's runs: its seeds are compared only at these steps


def particle_run(prompt: str, n: int, steps: int, out: Path, prior) -> tuple[list, float]:
    """(the n particles of a finished VSD run of `prompt`, its seconds); runs or resumes it if needed."""
    config = table_config(prompt=prompt, guidance="vsd", seed=0, out=str(out), vsd=VSDConfig(particles=n))
    config.steps = steps
    if not (out / "metrics.json").is_file():
        generate(config, prior=prior, resume=True, progress=False)
    seconds = json.loads((out / "metrics.json").read_text())["seconds"]
    return [load_run(out, particle=i)[1] for i in range(n)], seconds


def seconds_per_step(prompt: str, n: int, steps: int, out: Path, prior) -> float:
    """Seconds per step of a short VSD run with n particles (no previews or checkpoints)."""
    config = table_config(prompt=prompt, guidance="vsd", seed=0, out=str(out), preview_every=0,
                          checkpoint_every=0, turntable_frames=1, turntable_resolution=16, vsd=VSDConfig(particles=n))
    config.steps = steps
    return generate(config, prior=prior, progress=False).metrics["seconds_per_step"]


def recorded_seeds(results: Ledger, prompt: str, n: int) -> list[dict] | None:
    """The guidance table's VSD runs of seeds 0..n-1: [{"row", "features" [V, D], "picture"}], or None."""
    keys = [run_id("vsd", prompt, seed) for seed in range(n)]
    if any(key not in results.runs or results.features(key) is None for key in keys):
        return None
    return [{"row": results.runs[key], "features": results.features(key), "picture": results.picture(key)}
            for key in keys]


def main() -> None:
    from sds3d.world.evaluator import Evaluator

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=3, help="first N prompts of the suite")
    parser.add_argument("--particles", type=int, default=3)
    parser.add_argument("--steps", type=int, default=TABLE_STEPS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cost-steps", type=int, default=10, help="steps of the cost measurement (0: skip)")
    parser.add_argument("--out", default="runs/vsd_particles")
    parser.add_argument("--results", default=str(RESULTS), help="the guidance table's committed results")
    args = parser.parse_args()
    if args.particles < 2:
        parser.error("--particles must be at least 2 to measure diversity")
    torch.set_num_threads(args.threads)
    prior, evaluator, results = load_prior("embedded"), Evaluator.load(), Ledger(args.results)
    rows, grid = [], []
    for prompt in suite(None)[: args.prompts]:
        folder = Path(args.out) / f"{prompt.replace(' ', '_')}_p{args.particles}_steps{args.steps}"
        particles, seconds = particle_run(prompt, args.particles, args.steps, folder, prior)
        scores, features, pictures = [], [], []
        for particle in particles:
            images, _ = render_for_evaluator(particle, evaluation_cameras())
            features.append(evaluator.features(images).detach())
            scores.append(evaluate_asset(particle, prompt, evaluator))
            pictures.append(render_turntable(particle, n_frames=1, resolution=64)[0])
        row = {"prompt": prompt, "particles_kind_acc": [s["kind_acc"] for s in scores],
               "particles_color_acc": [s["color_acc"] for s in scores],
               "particles_diversity": pairwise_feature_distance(features), "particles_seconds": seconds}
        seeds = recorded_seeds(results, prompt, args.particles) if args.steps == TABLE_STEPS else None
        if seeds is not None:
            row |= {"seeds_kind_acc": [s["row"]["kind_acc"] for s in seeds],
                    "seeds_color_acc": [s["row"]["color_acc"] for s in seeds],
                    "seeds_diversity": pairwise_feature_distance([s["features"] for s in seeds]),
                    "seeds_seconds": sum(s["row"]["seconds"] for s in seeds)}
            pictures += [s["picture"] for s in seeds]
        rows.append(row)
        grid.append(np.stack(pictures))
        print(json.dumps(row), flush=True)
    summary = {"particles": args.particles, "steps": args.steps, "prompts": len(rows)}
    for key in ("particles", "seeds"):
        if all(f"{key}_kind_acc" in row for row in rows):
            summary[f"{key}_kind_acc"] = statistics.mean(a for row in rows for a in row[f"{key}_kind_acc"])
            summary[f"{key}_color_acc"] = statistics.mean(a for row in rows for a in row[f"{key}_color_acc"])
            summary[f"{key}_diversity"] = statistics.mean(row[f"{key}_diversity"] for row in rows)
            summary[f"{key}_seconds"] = statistics.mean(row[f"{key}_seconds"] for row in rows)
    if args.cost_steps:
        prompt, cost_dir = suite(None)[0], Path(args.out) / "cost"
        one = seconds_per_step(prompt, 1, args.cost_steps, cost_dir / "p1", prior)
        many = seconds_per_step(prompt, args.particles, args.cost_steps, cost_dir / f"p{args.particles}", prior)
        summary |= {"seconds_per_step_1": one, f"seconds_per_step_{args.particles}": many, "cost_ratio": many / one}
    columns = max(len(pictures) for pictures in grid)
    padded = [np.concatenate([p, np.full((columns - len(p), *p.shape[1:]), 255, np.uint8)]) for p in grid]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    save_png(image_grid(np.concatenate(padded), columns=columns), Path(args.out) / "grid.png")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
