"""What pruning the Gaussians the white background hides does to finished assets.

    python benchmarks/hidden_gaussians.py SUITE_DIR [--max-share 0.25] [--changed 0.05] [--tolerance 0.05]
                                          [--rows OUT.jsonl] [--threads 1]

SUITE_DIR is a `benchmarks/text_to_3d.py --out` folder of Gaussian runs (one run per prompt). Each
asset is scored by the evaluator as it was saved and again after `hidden_gaussians` pruned it (what
`Gaussians.finish` now does after a run's last step), so the two columns differ by the pruning alone,
not by another optimisation. One JSON row per run (`--rows` appends them); the last line is JSON
{"before": {kind_acc, color_acc, janus_rate, shape_acc, chamfer}, "after": {...}, "pruned_mean", "runs"}.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from tqdm import tqdm

from text_to_3d import summary  # the suite's means (this script's folder is on sys.path)

KEYS = ("kind_acc", "color_acc", "janus_rate", "shape_acc", "shape_rank", "chamfer")


def main() -> None:
    from sds3d.evaluate import evaluate_asset
    from sds3d.generate import load_run
    from sds3d.representations.gaussians import Gaussians
    from sds3d.representations.hidden_gaussians import hidden_gaussians
    from sds3d.world.evaluator import Evaluator

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", type=Path)
    p.add_argument("--max-share", type=float, default=0.25)
    p.add_argument("--changed", type=float, default=0.05)
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--rows", type=Path, default=None, help="append one JSON row per run to this file")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    runs = sorted(d for d in args.suite.iterdir() if (d / "checkpoint.pt").is_file()) if args.suite.is_dir() else []
    if not runs:
        raise SystemExit(f"no runs in {args.suite} (folders with checkpoint.pt)")
    evaluator = Evaluator.load()
    before, after, pruned = [], [], []
    for run in tqdm(runs, desc="runs"):
        config, gaussians = load_run(run)
        if not isinstance(gaussians, Gaussians):
            raise SystemExit(f"{run} is a {config.representation} run; this benchmark prunes Gaussians")
        scores = evaluate_asset(gaussians, config.prompt, evaluator)
        hidden = hidden_gaussians(gaussians, torch.ones(3), tolerance=args.tolerance, changed=args.changed,
                                  max_share=args.max_share)
        with torch.no_grad():
            gaussians.params["opacities"][hidden] = -30.0  # renders exactly as if removed
        pruned_scores = evaluate_asset(gaussians, config.prompt, evaluator)
        row = {"run": run.name, "prompt": config.prompt, "seed": config.seed, "steps": config.steps,
               "prior": config.prior, "gaussians": len(gaussians), "pruned": int(hidden.sum()),
               "before": {k: scores[k] for k in KEYS}, "after": {k: pruned_scores[k] for k in KEYS}}
        before.append(row["before"])
        after.append(row["after"])
        pruned.append(row["pruned"])
        print(json.dumps(row), flush=True)
        if args.rows is not None:
            with args.rows.open("a") as f:
                f.write(json.dumps({"max_share": args.max_share, "changed": args.changed,
                                    "tolerance": args.tolerance, **row}) + "\n")
    print(json.dumps({"before": summary(before), "after": summary(after),
                      "pruned_mean": statistics.mean(pruned), "runs": len(runs)}))


if __name__ == "__main__":
    main()
