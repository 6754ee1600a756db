"""Held-out part segmentation by text query of the shipped feature teacher (assets/feature_teacher/).

    python benchmarks/feature_teacher.py [--n 1120] [--limit N] [--teacher PATH] [--resolution R]
                                         [--renders mesh|gaussians]

Renders `n` new labelled views (every (kind, colour) pair equally often; seed PART_SEEDS["benchmark"],
used by no training) of the meshes, or with `--renders gaussians` of the objects converted to 2k-20k
Gaussians (`sds3d.world.splat_part_dataset`, seed PART_SEEDS["splat_benchmark"]), and queries every
part of every kind three ways: "the <part>" and "the <kind>'s <part>" (phrasings seen in training)
and "the <part> on this <kind>" (never seen). A query selects the pixels where its probability
exceeds 0.5 (at the renders' resolution: the teacher's input by default); IoU against the true part,
accumulated over all renders of the part's kind. Also LERF-style relevancy: the query beats every
canonical negative ("object", "things", "stuff", "texture") in a pairwise softmax; and, with the kind
known, each pixel labelled by the best of the background and that kind's parts. Appends a line to
benchmarks/results/feature_teacher/iou.jsonl and prints JSON last: mean_iou (trained phrasings),
mean_iou_unseen_phrasing, per_part, seconds, and the rest.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "feature_teacher" / "iou.jsonl"


@torch.no_grad()
def lerf_iou(teacher, data, batch: int = 64) -> float:
    """Mean over parts of the IoU of "the <part>" selected by relevancy against the canonical negatives."""
    from sds3d.features.teacher import CANONICAL_NEGATIVES
    from sds3d.world import KINDS
    from sds3d.world.part_dataset import part_label, part_nouns
    from sds3d.world.train_part_teacher import feature_batches

    queries = {(k, p): f"the {part_nouns(k, p)[0]}" for k, spec in KINDS.items() for p in spec.parts}
    phrases = sorted(set(queries.values()))
    text = teacher.text_features(phrases)
    negatives = teacher.text_features(list(CANONICAL_NEGATIVES))
    inter, union = {}, {}
    for features, labels, kinds in feature_batches(teacher, data, batch=batch):
        cos_q = torch.einsum("bdhw,nd->bnhw", features, text)
        best_negative = torch.einsum("bdhw,nd->bnhw", features, negatives).max(1).values  # [b, H, W]
        for i, kind in enumerate(kinds):
            for part in KINDS[kind].parts:
                pred = cos_q[i, phrases.index(queries[(kind, part)])] > best_negative[i]
                truth = labels[i] == part_label(kind, part)
                inter[(kind, part)] = inter.get((kind, part), 0) + int((pred & truth).sum())
                union[(kind, part)] = union.get((kind, part), 0) + int((pred | truth).sum())
    return float(np.mean([inter[key] / union[key] for key in inter if union[key] > 0]))


@torch.no_grad()
def within_kind_iou(teacher, data, batch: int = 64) -> float:
    """Mean part IoU when the kind is known: each pixel takes the best of "the background" and "the
    <kind>'s <part>" for the parts of the image's kind (no threshold; how well the features separate
    parts, apart from calibration)."""
    from sds3d.world import KINDS
    from sds3d.world.part_dataset import kind_nouns, part_label, part_nouns
    from sds3d.world.train_part_teacher import feature_batches

    text = {kind: teacher.text_features(["the background"] + [f"the {kind_nouns(kind)[0]}'s {part_nouns(kind, p)[0]}"
                                                              for p in spec.parts])
            for kind, spec in KINDS.items()}
    inter, union = {}, {}
    for features, labels, kinds in feature_batches(teacher, data, batch=batch):
        for i, kind in enumerate(kinds):
            choice = torch.einsum("dhw,nd->nhw", features[i], text[kind]).argmax(0)
            for j, part in enumerate(KINDS[kind].parts, start=1):
                pred, truth = choice == j, labels[i] == part_label(kind, part)
                inter[(kind, part)] = inter.get((kind, part), 0) + int((pred & truth).sum())
                union[(kind, part)] = union.get((kind, part), 0) + int((pred | truth).sum())
    return float(np.mean([inter[key] / union[key] for key in inter if union[key] > 0]))


def main(argv=None) -> dict:
    from sds3d.features.load import load_feature_teacher
    from sds3d.hardware import cpu_model
    from sds3d.world.part_dataset import PART_RESOLUTION, PART_SEEDS, render_part_dataset
    from sds3d.world.splat_part_dataset import render_splat_part_dataset
    from sds3d.world.train_part_teacher import evaluate_iou

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1120, help="renders (40 per kind by default)")
    p.add_argument("--limit", type=int, default=None, help="use only this many renders (a quick check)")
    p.add_argument("--renders", choices=("mesh", "gaussians"), default="mesh",
                   help="shaded mesh renders, or renders of the objects converted to Gaussians")
    p.add_argument("--seed", type=int, default=None,
                   help='default PART_SEEDS["benchmark"] (mesh) or ["splat_benchmark"] (gaussians)')
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--teacher", default=None, help="teacher folder (default: assets/feature_teacher)")
    p.add_argument("--resolution", type=int, default=None,
                   help="render and judge at R x R (default: the teacher's input resolution)")
    p.add_argument("--results", default=str(RESULTS), help="JSONL file to append the result to ('' = none)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    n = args.n if args.limit is None else min(args.n, args.limit)
    teacher = load_feature_teacher(args.teacher)
    resolution = args.resolution or getattr(teacher, "resolution", PART_RESOLUTION)
    t0 = time.time()
    if args.seed is None:
        seed = PART_SEEDS["benchmark" if args.renders == "mesh" else "splat_benchmark"]
    else:
        seed = args.seed
    render = render_part_dataset if args.renders == "mesh" else render_splat_part_dataset
    data = render(n, seed, resolution)
    render_seconds = time.time() - t0
    t0 = time.time()
    result = evaluate_iou(teacher, data)
    lerf = lerf_iou(teacher, data)
    within = within_kind_iou(teacher, data)
    seconds = time.time() - t0
    # Parts never visible in these renders have no IoU (null in the JSON).
    per_part = {part: {key: None if np.isnan(v) else v for key, v in ious.items()}
                for part, ious in result.pop("per_part").items()}
    seen = {k: (v["the_part"] + v["the_kinds_part"]) / 2 for k, v in per_part.items() if v["the_part"] is not None}
    print("weakest parts:", ", ".join(f"{k} {v:.3f}" for k, v in sorted(seen.items(), key=lambda kv: kv[1])[:5]))
    out = {"mean_iou": round(result["mean_iou"], 4),
           "mean_iou_unseen_phrasing": round(result["mean_iou_unseen_phrasing"], 4),
           "mean_iou_lerf_relevancy": round(lerf, 4), "mean_iou_kind_known": round(within, 4),
           "object_iou": round(result["object_iou"], 4),
           "background_iou": round(result["background_iou"], 4), "per_part": per_part,
           "seconds": round(seconds, 1), "render_seconds": round(render_seconds, 1), "images": n,
           "renders": args.renders, "seed": seed, "resolution": resolution, "teacher": teacher.name,
           "teacher_folder": args.teacher or "shipped",
           "teacher_steps": (getattr(teacher, "config", None) or {}).get("training", {}).get("steps"),
           "cpu": cpu_model(), "threads": args.threads,
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if args.results:
        path = Path(args.results)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(out) + "\n")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
