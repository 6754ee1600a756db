"""Held-out accuracy of the shipped micro-world evaluator on freshly rendered views.

    python benchmarks/evaluator.py [--n 2800] [--seed 4000]

Renders `n` new views (every (kind, colour) pair equally often) with a seed that neither the prior
nor the evaluator was trained on (SEEDS["benchmark"]), scores `assets/evaluator/` and prints one JSON
line last: kind_acc, color_acc, view_acc (view bin on the kinds with a front, all views),
view_acc_overhead (overhead views of every kind), per-kind accuracies and timings.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    from sds3d.world.dataset import SEEDS, render_dataset
    from sds3d.world.evaluator import Evaluator, score

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2800)
    p.add_argument("--seed", type=int, default=SEEDS["benchmark"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--evaluator", default=None, help="evaluator folder (default: assets/evaluator)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.time()
    data = render_dataset(args.n, args.seed)
    t_render = time.time() - t0
    evaluator = Evaluator.load(args.evaluator)
    kinds = [data.kinds[i] for i in data.kind.tolist()]
    colors = [data.colors[i] for i in data.color.tolist()]
    views = [data.views[i] for i in data.view.tolist()]
    t0 = time.time()
    result = score(evaluator, data.float_images(), kinds, colors, views)
    t_score = time.time() - t0
    pred = evaluator.predict(data.float_images())
    per_kind = {}
    for kind in data.kinds:
        idx = [i for i, k in enumerate(kinds) if k == kind]
        per_kind[kind] = round(sum(pred["kind"][i] == kind for i in idx) / max(1, len(idx)), 3)
    worst = sorted(per_kind.items(), key=lambda kv: kv[1])[:5]
    print("worst kinds:", ", ".join(f"{k} {v:.3f}" for k, v in worst))
    result.update(seed=args.seed, render_seconds=round(t_render, 1), score_seconds=round(t_score, 2),
                  per_kind_acc=per_kind)
    for key in ("kind_acc", "color_acc", "view_acc", "view_acc_overhead"):
        result[key] = round(result[key], 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
