"""Recipes against the `baseline` preset (the settings every speed-up is measured against) on the
28-prompt suite, in one process and alternating per prompt, so that all arms see the same machine.

    python benchmarks/speed_suite.py --threads 1 [--arms baseline,fast,draft] [--seeds 0,1] [--kinds mug,chair]

An arm is "defaults" (today's GenerateConfig) or a preset's name. Each prompt runs once per arm and
seed (`--seeds`, default 0; runs of seed s > 0 are named `<prompt>_seed<s>`), and each asset is scored
by the evaluator as in `benchmarks/text_to_3d.py`. A run of exactly the same config already in `--out`
is reused (its seconds are then those of the run that made it), so an interrupted suite resumes. Rows
go to `benchmarks/results/speed_suite/runs.jsonl` (one per prompt, arm and seed, with the CPU and a run
id). The last line is JSON: {"speedup": {arm: baseline median seconds / the arm's}, "arms": {arm:
{kind_acc, color_acc, janus_rate, shape_acc, chamfer, seconds (median over all seeds)}}, "cpu",
"threads"}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from text_to_3d import run_and_score, suite, summary
from sds3d.generate import GenerateConfig
from sds3d.hardware import cpu_model
from sds3d.presets import arm_config

RESULTS = Path(__file__).resolve().parent / "results" / "speed_suite" / "runs.jsonl"
ARMS = "baseline,draft"  # the defaults are the baseline today; compare the presets


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default=ARMS, help=f"comma-separated: defaults and preset names (default {ARMS}); "
                                                     "baseline is always run")
    parser.add_argument("--kinds", help="comma-separated subset of kinds (default: all 28)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0); each seed is a pass over the suite")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default="runs/speed_suite", help="where the runs go")
    parser.add_argument("--results", default=str(RESULTS), help="JSONL the rows are appended to")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from sds3d.guidance.registry import load_prior
    from sds3d.world.evaluator import Evaluator

    priors, evaluator = {}, Evaluator.load()  # each arm's prior (a preset may name another), loaded once
    run_id, cpu = time.strftime("%Y-%m-%dT%H:%M:%S"), cpu_model()
    arms = ["baseline", *(arm for arm in args.arms.split(",") if arm and arm != "baseline")]
    rows = {arm: [] for arm in arms}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    passes = [(int(seed), prompt) for seed in args.seeds.split(",") for prompt in suite(args.kinds)]
    for seed, prompt in passes:
        for arm in arms:
            name = prompt.replace(" ", "_") + ("" if seed == 0 else f"_seed{seed}")
            config = arm_config(GenerateConfig(prompt=prompt, seed=seed, out=str(Path(args.out) / arm / name)), arm)
            if config.prior not in priors:
                priors[config.prior] = load_prior(config.prior)
            row, _ = run_and_score(config, priors[config.prior], evaluator)
            row = {"run": run_id, "arm": arm, "seed": seed, **row, "cpu": cpu, "threads": args.threads}
            rows[arm].append(row)
            print(json.dumps(row), flush=True)
            with open(args.results, "a") as handle:
                handle.write(json.dumps(row) + "\n")
    means = {arm: summary(arm_rows) for arm, arm_rows in rows.items()}
    speedup = {arm: round(means["baseline"]["seconds"] / mean["seconds"], 2) for arm, mean in means.items()}
    print(json.dumps({"speedup": speedup, "arms": means, "cpu": cpu, "threads": args.threads}))


if __name__ == "__main__":
    main()
