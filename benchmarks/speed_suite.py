"""Today's defaults against the `baseline` preset (the defaults every speed-up is measured against) on
the 28-prompt suite, in one process and alternating per prompt, so that both see the same machine.

    python benchmarks/speed_suite.py --threads 1 [--kinds mug,chair] [--out runs/speed_suite]

Each prompt runs twice, baseline then defaults (seed 0), and each asset is scored by the evaluator as
in `benchmarks/text_to_3d.py`. A run of exactly the same config already in `--out` is reused, so an
interrupted suite resumes. Rows go to `benchmarks/results/speed_suite/runs.jsonl` (one per prompt and
arm, with the CPU and a run id). The last line is JSON: {"speedup": baseline median seconds / defaults
median seconds, "arms": {"baseline"|"defaults": {kind_acc, color_acc, janus_rate, shape_acc, chamfer,
seconds (median)}}, "cpu", "threads"}.
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
from sds3d.presets import apply_preset

RESULTS = Path(__file__).resolve().parent / "results" / "speed_suite" / "runs.jsonl"
ARMS = ("baseline", "defaults")


def arm_config(arm: str, prompt: str, out: Path) -> GenerateConfig:
    config = GenerateConfig(prompt=prompt, seed=0, out=str(out / arm / prompt.replace(" ", "_")))
    return apply_preset(config, "baseline") if arm == "baseline" else config


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", help="comma-separated subset of kinds (default: all 28)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default="runs/speed_suite", help="where the runs go")
    parser.add_argument("--results", default=str(RESULTS), help="JSONL the rows are appended to")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from sds3d.guidance.registry import load_prior
    from sds3d.world.evaluator import Evaluator

    prior, evaluator = load_prior("embedded"), Evaluator.load()
    run_id, cpu = time.strftime("%Y-%m-%dT%H:%M:%S"), cpu_model()
    rows = {arm: [] for arm in ARMS}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    for prompt in suite(args.kinds):
        for arm in ARMS:
            row, _ = run_and_score(arm_config(arm, prompt, Path(args.out)), prior, evaluator)
            row = {"run": run_id, "arm": arm, **row, "cpu": cpu, "threads": args.threads}
            rows[arm].append(row)
            print(json.dumps(row), flush=True)
            with open(args.results, "a") as handle:
                handle.write(json.dumps(row) + "\n")
    arms = {arm: summary(arm_rows) for arm, arm_rows in rows.items()}
    speedup = arms["baseline"]["seconds"] / arms["defaults"]["seconds"]
    print(json.dumps({"speedup": round(speedup, 2), "arms": arms, "cpu": cpu, "threads": args.threads}))


if __name__ == "__main__":
    main()
