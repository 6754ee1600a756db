"""Queries outside the part teacher's vocabulary: unrelated phrases and untrained part names.

    python benchmarks/open_vocabulary.py [--points 5000] [--teacher DIR] [--threads 1]

Ten micro-world objects (red) are converted to Gaussians and given a feature field distilled from
the shipped part teacher (or `--teacher DIR`), as in `benchmarks/selection.py`. Two kinds of query
that no training concept paraphrases in words are scored three ways (a query that the teacher's text space nonetheless puts
within `SNAP_COSINE` of a trained concept is scored as that concept, as `select_points` does, and
named under "snapped" in the summary):
- `vocabulary`: what `select_points` does (`PartVocabulary.scores`: the query competes with the
  nearest concept's vocabulary; score > 0.5, grown through nearest neighbours to score > 0.2);
- `vocabulary_not_grown`: the same scores, > 0.5 only;
- `sigmoid`: the teacher's open-vocabulary head, sigmoid(logits(feature, query)) > 0.5.

Unrelated phrases ("a dragon" on every object) should select nothing: the fraction of the object's
points selected, and how many (object, phrase) cases select more than 0.5 %. Untrained names of real
parts ("the legs" of a chair) should select that part: IoU over the visible Gaussians. Rows go to
benchmarks/results/selection/open_vocabulary.jsonl; the last line is JSON
{"vocabulary"|"vocabulary_not_grown"|"sigmoid": {"unrelated_fraction", "unrelated_cases_selecting", "untrained_name_iou"}, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sds3d.hardware import cpu_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "selection" / "open_vocabulary.jsonl"
KINDS = ("mug", "chair", "house", "car", "snowman", "table", "lamp", "airplane", "robot", "clock")
UNRELATED = ("a dragon", "a cat", "the sky", "the spout", "the wings", "the chimney", "the keyboard",
             "the engine", "the bell", "the lid", "a person", "the water")
UNTRAINED_NAMES = {  # (kind, query): the parts it names
    ("chair", "the legs"): ("frame",), ("table", "the legs"): ("frame",), ("chair", "the backrest"): ("frame",),
    ("snowman", "the carrot"): ("nose",), ("snowman", "the coal eyes"): ("coal",),
    ("house", "a window"): ("windows",), ("car", "a window"): ("windows",), ("car", "the rim"): ("wheels",),
    ("clock", "the face"): ("dial",), ("clock", "the numbers"): ("dial",), ("lamp", "the stand"): ("pole",),
    ("lamp", "the light bulb"): ("shade",)}


def main() -> None:
    from sds3d.features.distill import DistillConfig, distill_features
    from sds3d.features.field import feature_field_of
    from sds3d.features.load import load_feature_teacher
    from sds3d.features.part_oracle import PartOracle, part_gaussians
    from sds3d.features.select import mask_of_scores, phrase_scores
    from sds3d.features.vocabulary import SNAP_COSINE
    from sds3d.world import KINDS as WORLD

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=5000)
    p.add_argument("--teacher", default=None, help="a part teacher folder (default: the shipped one)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load_feature_teacher(args.teacher)
    vocabulary = teacher.part_vocabulary
    queries = sorted({*UNRELATED, *(query for _, query in UNTRAINED_NAMES)})
    text = teacher.text_features(queries).float()
    # A query this teacher's text space puts next to a trained concept is scored as that concept
    # (`PartVocabulary.scores`): still measured, and named in the summary.
    snapped = [q for q, similarity in zip(queries, (text @ vocabulary.text.T).amax(-1)) if similarity >= SNAP_COSINE]
    rows = []
    for kind in KINDS:
        gaussians, parts = part_gaussians(kind, "red", args.points)
        visible = PartOracle(kind, "red").visible(gaussians.means.detach())
        distill_features(gaussians, teacher, DistillConfig(), progress=False)
        field = feature_field_of(gaussians)
        with torch.no_grad():
            features = F.normalize(field.point_features(gaussians).float(), dim=-1)
            occupied = field.occupied(gaussians)
            vocabulary_scores = phrase_scores(teacher, features, queries)
            sigmoid_scores = torch.sigmoid(teacher.model.logits(features, text)).T
        rules = {"vocabulary": lambda i: mask_of_scores(gaussians, vocabulary_scores[i]),
                 "vocabulary_not_grown": lambda i: (vocabulary_scores[i] > 0.5) & occupied,
                 "sigmoid": lambda i: (sigmoid_scores[i] > 0.5) & occupied}
        for i, query in enumerate(queries):
            names = UNTRAINED_NAMES.get((kind, query))
            if query not in UNRELATED and names is None:
                continue
            row = {"kind": kind, "query": query, "type": "unrelated" if names is None else "untrained_name",
                   "snapped": query in snapped}
            for rule, selects in rules.items():
                mask = selects(i)
                if names is None:
                    row[f"{rule}_fraction"] = round(float(mask.float().mean()), 4)
                else:
                    truth = torch.isin(parts, torch.tensor([list(WORLD[kind].parts).index(n) for n in names]))
                    union = float((mask[visible] | truth[visible]).sum())
                    row[f"{rule}_iou"] = round(float((mask[visible] & truth[visible]).sum()) / union, 4) if union else 1.0
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    unrelated = [r for r in rows if r["type"] == "unrelated"]
    named = [r for r in rows if r["type"] == "untrained_name"]
    summary = {rule: {"unrelated_fraction": round(sum(r[f"{rule}_fraction"] for r in unrelated) / len(unrelated), 4),
                      "unrelated_cases_selecting": sum(r[f"{rule}_fraction"] > 0.005 for r in unrelated),
                      "untrained_name_iou": round(sum(r[f"{rule}_iou"] for r in named) / len(named), 4)}
               for rule in rules}
    print(json.dumps({**summary, "unrelated_cases": len(unrelated), "untrained_names": len(named), "snapped": snapped,
                      "points": args.points, "teacher": teacher.name, "teacher_version": teacher.version,
                      "teacher_folder": args.teacher or "shipped", "cpu": cpu_model(), "threads": args.threads}))


if __name__ == "__main__":
    main()
