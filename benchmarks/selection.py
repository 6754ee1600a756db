"""Text selection on distilled feature fields: 3D IoU against true part membership.

    python benchmarks/selection.py [--teacher shipped|oracle|PATH] [--points 20000] [--kinds mug,car]
                                   [--steps 100] [--threads 2] [--color red] [--no-context]
                                   [--low-threshold 0.2] [--out FILE]

Every micro-world kind is converted to Gaussians (`mesh_to_gaussians`, `--points` of them), each
Gaussian's true part being the part of the face it was sampled on (its nearest face). A feature
field is distilled from the teacher (`distill_features` on the asset's own renders; the
ground-truth part oracle instead gives its part maps for the same cameras), and every named part
is queried as "the <part>" and "the <kind>'s <part>" (`select_points`: threshold 0.5, grown to
neighbours above `--low-threshold`, default 0.2; 0.5: not grown), told the object's kind as its
context (what `sds3d edit` tells it; `--no-context`: not told). IoU is
measured over the visible Gaussians (on the object's visible surface from some view; Gaussians
sampled on faces buried inside another part's solid cannot be seen by any 2D teacher) and, for
reference, over all. One JSONL row per (kind, part, phrasing) goes to `--out` (default
benchmarks/results/selection/cases.jsonl), shared by every run: each row's `run` names its
configuration, "<teacher>[-context][-grown]" (e.g. "oracle-context-grown"), and a run replaces its own
rows there, leaving the others. The summary, printed last, is appended to summary.jsonl beside them:
its run, mean IoU (visible and all), per part, and distillation seconds (mean and largest, with the
CPU model).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from sds3d.hardware import cpu_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "selection"


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = float((a | b).sum())
    return float((a & b).sum()) / union if union else 1.0


def grown_suffix(low_threshold: float) -> str:
    """The run-name suffix of a growth rule: "" not grown, "-grown" to 0.2, "-grown<low>" otherwise
    (rows are resumed by run, so each rule keeps its own)."""
    if low_threshold >= 0.5:
        return ""
    return "-grown" if low_threshold == 0.2 else f"-grown{low_threshold:g}"


def shipped_name(teacher) -> str:
    """The shipped teacher's name in run names: with its weights' version, so that the rows of
    another version are not taken for its own (the 6,000-step teacher's runs carry the bare name)."""
    return f"{teacher.name}-{teacher.version}" if teacher.version else teacher.name


def replace_run(path: Path, run: str, rows: list[dict]) -> None:
    """Replace the rows of `run` in the table at `path` by `rows` (which carry it), keeping other runs' rows."""
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line + "\n" for line in lines if line.strip() and json.loads(line).get("run") != run]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept) + "".join(json.dumps(row) + "\n" for row in rows))
    os.replace(tmp, path)


def distil(kind: str, teacher_arg: str, teacher, gaussians, config):
    """-> (teacher for queries, seconds) after attaching a distilled field to `gaussians`."""
    from sds3d.features.distill import distill_features, distillation_cameras, fit_field
    from sds3d.features.field import attach_field, field_for
    from sds3d.features.part_oracle import PartOracle

    start = time.perf_counter()
    if teacher_arg == "oracle":
        oracle = PartOracle(kind)
        field = field_for(gaussians, oracle.dim, config.latent_dim, oracle.name)
        cameras = distillation_cameras(gaussians.means, config.views, config.resolution)
        fit_field(gaussians, field, cameras, oracle.part_features(cameras), config, progress=False)
        attach_field(gaussians, field)
        return oracle, time.perf_counter() - start
    distill_features(gaussians, teacher, config, progress=False)
    return teacher, time.perf_counter() - start


def main() -> None:
    from sds3d.errors import InputError
    from sds3d.features.distill import DistillConfig
    from sds3d.features.part_oracle import PartOracle, part_gaussians
    from sds3d.features.select import DEFAULT_LOW_THRESHOLD, mask_of_scores, query_relevancy
    from sds3d.world import KINDS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="shipped", help="shipped | oracle | a teacher folder")
    p.add_argument("--points", type=int, default=20000)
    p.add_argument("--kinds", default="", help="comma-separated kind keys (default: all)")
    p.add_argument("--steps", type=int, default=DistillConfig.steps)
    p.add_argument("--color", default="red")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-context", action="store_true", help="do not tell the selection the object's kind")
    p.add_argument("--low-threshold", type=float, default=DEFAULT_LOW_THRESHOLD,
                   help="grow the selection to points above this (select_points' hysteresis; 0.5: no growth)")
    p.add_argument("--out", default=str(RESULTS / "cases.jsonl"),
                   help="the table, shared by every run (JSONL); summary.jsonl goes beside it")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    teacher, name = None, args.teacher
    if args.teacher != "oracle":
        from sds3d.features.load import load_feature_teacher

        teacher = load_feature_teacher(None if args.teacher == "shipped" else args.teacher)
        name = shipped_name(teacher) if args.teacher == "shipped" else Path(args.teacher).name
    kinds = [k for k in args.kinds.split(",") if k] or list(KINDS)
    config = DistillConfig(steps=args.steps)
    context = not args.no_context
    run = name + ("-context" if context else "") + grown_suffix(args.low_threshold)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, seconds = [], []
    for kind in kinds:
        spec = KINDS[kind]
        gaussians, parts = part_gaussians(kind, args.color, args.points)
        visible = PartOracle(kind, args.color).visible(gaussians.means.detach())
        query_teacher, took = distil(kind, args.teacher, teacher, gaussians, config)
        seconds.append(took)
        for index, part in enumerate(spec.parts):
            truth = parts == index
            for phrasing, query in (("the <part>", f"the {part}"), ("the <kind>'s <part>", f"the {spec.synonyms[0]}'s {part}")):
                try:
                    score = query_relevancy(gaussians, query, query_teacher, context=kind if context else None)
                except InputError as error:
                    raise SystemExit(f"selection benchmark: {error}") from None
                mask = mask_of_scores(gaussians, score, 0.5, args.low_threshold)
                row = {"run": run, "kind": kind, "part": part, "query": query, "phrasing": phrasing,
                       "iou_visible": round(iou(mask[visible], truth[visible]), 4), "iou_all": round(iou(mask, truth), 4),
                       "selected": int(mask.sum()), "true": int(truth.sum()), "gaussians": len(gaussians),
                       "distill_seconds": round(took, 2)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    replace_run(out, run, rows)
    per_part = {}
    for r in rows:
        per_part.setdefault(f"{r['kind']}/{r['part']}", []).append(r["iou_visible"])
    summary = {"run": run, "teacher": name, "oracle": args.teacher == "oracle", "context": context,
               "low_threshold": args.low_threshold, "points": args.points, "steps": args.steps,
               "kinds": len(kinds), "queries": len(rows),
               "mean_iou": round(sum(r["iou_visible"] for r in rows) / len(rows), 4),
               "mean_iou_all_gaussians": round(sum(r["iou_all"] for r in rows) / len(rows), 4),
               "mean_iou_by_phrasing": {ph: round(sum(r["iou_visible"] for r in rows if r["phrasing"] == ph)
                                                  / sum(r["phrasing"] == ph for r in rows), 4)
                                        for ph in ("the <part>", "the <kind>'s <part>")},
               "per_part": {k: round(sum(v) / len(v), 4) for k, v in per_part.items()},
               "distill_seconds_mean": round(sum(seconds) / len(seconds), 2),
               "distill_seconds_max": round(max(seconds), 2), "threads": args.threads, "cpu": cpu_model(),
               "results": str(out)}
    with open(out.parent / "summary.jsonl", "a") as stream:  # one line per run, beside the rows
        stream.write(json.dumps(summary) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
