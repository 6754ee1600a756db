"""Editing benchmark on ground truth: text selection, masked recolour, global edits, edit speed.

    python benchmarks/editing.py [--limit N] [--teacher shipped|oracle|PATH] [--points 5000]
                                 [--global-steps 200] [--speed-steps 200] [--threads 2]
                                 [--tables selection,recolour,global,speed] [--prior embedded] [--out DIR]
                                 [--generated DIR]   # also on generated assets: text_to_3d.py --out DIR

Micro-world objects are converted to Gaussians (`part_gaussians`: `mesh_to_gaussians`, each
Gaussian's true part the part of its nearest face). When the shipped feature teacher is absent
(assets/feature_teacher/), the ground-truth part oracle stands in and the JSON says "teacher": "oracle".
Queries are scored knowing what the object is (`select_points(..., context=kind)`: the source prompt,
which `sds3d edit` always has); `--no-context` scores them without, in runs without "-context".
Selections grow through nearest neighbours to points above `--low-threshold` (`select_points`' default
0.2), in runs ending "-grown" ("-grown<low>" for another low threshold); 0.5 does not grow them.
Four tables, one JSONL each in `--out` (default benchmarks/results/editing/), shared by every run:
each row's `run` names its configuration, "<teacher>-<points>[-context][-grown]" (e.g.
"oracle-5000-context-grown") for selection and recolour, the prior (e.g. "embedded") for global and
speed. A run's rows already in a table are skipped (resume); other runs' rows are left alone.
- selection.jsonl: 3D IoU of "the <part>" and "the <kind>'s <part>" against true membership for
  every (kind, part), measured as benchmarks/selection.py does (its `distil` and `iou`);
- recolour.jsonl: "make the <part> <colour>" = `select_points` + `operations.recolour` on the
  selection (the direct method). The part's pixels are those its true Gaussians cover (their
  rendered mask > 0.5), at the 16 evaluation views' cameras and JUDGE_RESOLUTION pixels. Part colour
  accuracy: the fraction of views whose mean rendered colour on the part's pixels is nearest, under
  any Lambertian shading factor, to the target named colour; beside it the same for recolouring the
  true part (`part_color_acc_true_selection`, the measure's ceiling; the mesh's own part pixels,
  used before, put it at 0.87 on 5,000 Gaussians: they are a pixel or two fuller than the mesh and hide
  thin parts the mesh shows). PSNR outside the part: renders against before, on the pixels the
  true part's Gaussians do not cover (mask < 0.5). Kind accuracy of the evaluator after;
- global.jsonl: `GLOBAL_CASES`, colour edits ("a red mug" -> "a blue mug", "a green car" -> "a yellow
  car") and kind edits ("a red cone" -> "a red pyramid", "a blue cube" -> "a blue sphere") with
  `sds3d.edit.edit` and each of pds, dds, ssd, sds: target accuracy (the evaluator's colour head
  for colour edits, kind head for kind edits), Chamfer to the source, seconds;
- speed.jsonl: one edit of a 20k-Gaussian mug at the default EditConfig, `--speed-steps` steps
  (default: all of them), with seconds per step and the steps that fit in 60 s.
With `--generated DIR` (or `--tables generated`), selection and masked recolour also run on the
generated assets of DIR, their parts carried over from their kind's mesh (`editing_generated.py`,
`generated_parts.py`): generated_selection.jsonl and generated_recolour.jsonl, their run
"<teacher>[-context][-grown]", the picture generated_grid-<run>.png, and "generated" in the JSON.
`--limit N` caps the cases of each table. The picture grid.png shows before / selection / after
rows for the recolour cases run. Last line: the JSON summary (also appended to summary.jsonl, with
the tables run, each one's run, the teacher and the date; the figures of a table not run are null).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from selection import cpu_model, distil, grown_suffix, iou, shipped_name  # noqa: E402  (the selection benchmark's)

RESULTS = Path(__file__).resolve().parent / "results" / "editing"
GUIDANCES = ("pds", "dds", "ssd", "sds")
GRID_SIZE = 160  # pixels of each picture in grid.png
JUDGE_RESOLUTION = 128  # pixels of the views that judge a recolour's part colour and the PSNR outside it
TABLES = ("selection", "recolour", "global", "speed")  # the default; "generated" needs --generated DIR
# (edit type, kind, source colour, source prompt, target prompt, target kind, target colour)
GLOBAL_CASES = (("colour", "mug", "red", "a red mug", "a blue mug", "mug", "blue"),
                ("kind", "cone", "red", "a red cone", "a red pyramid", "pyramid", "red"),
                ("colour", "car", "green", "a green car", "a yellow car", "car", "yellow"),
                ("kind", "cube", "blue", "a blue cube", "a blue sphere", "sphere", "blue"))


def read_rows(path: Path, run: str) -> list[dict]:
    """The rows of `run` in the table at `path` (the rows of other runs share the file)."""
    if not path.exists():
        return []
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [row for row in rows if row.get("run") == run]


def append_row(path: Path, row: dict) -> None:
    """One finished row, appended and flushed (a crash loses at most the row being measured)."""
    with open(path, "a") as stream:
        stream.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def nearest_color(rgb: torch.Tensor) -> str:
    """The named colour whose albedo, under some shading factor in SHADING_RANGE, is nearest `rgb` [3]."""
    from sds3d.world import COLORS
    from sds3d.world.colors import SHADING_RANGE

    factors = torch.linspace(*SHADING_RANGE, 66)[:, None]
    return min(COLORS, key=lambda name: float((factors * torch.tensor(COLORS[name].rgb) - rgb).norm(dim=-1).min()))


def psnr(a: torch.Tensor, b: torch.Tensor, cap: float = 100.0) -> float:
    """PSNR in dB of images in [0, 1]; identical images (or none) score `cap` (finite, so JSON and means hold)."""
    mse = float(((a - b) ** 2).mean()) if a.numel() else 0.0
    return cap if mse == 0 else min(cap, -10 * math.log10(mse))


class Objects:
    """Part-labelled Gaussians of micro-world kinds with a distilled feature field, built once per kind."""

    def __init__(self, teacher, teacher_arg: str, points: int, steps: int):
        from sds3d.features.distill import DistillConfig

        self.teacher, self.teacher_arg, self.points = teacher, teacher_arg, points
        self.config = DistillConfig(steps=steps)
        self.cache = {}

    def get(self, kind: str):
        """-> (gaussians with field, true part index [N], query teacher, distillation seconds)."""
        from sds3d.features.part_oracle import part_gaussians

        if kind not in self.cache:
            gaussians, parts = part_gaussians(kind, "red", self.points)
            query_teacher, took = distil(kind, self.teacher_arg, self.teacher, gaussians, self.config)
            self.cache[kind] = (gaussians, parts, query_teacher, took)
        return self.cache[kind]


def selection_table(objects: Objects, path: Path, run: str, limit: int | None, context: bool = True,
                    low_threshold: float = 0.5) -> list[dict]:
    from sds3d.errors import InputError
    from sds3d.features.part_oracle import PartOracle
    from sds3d.features.select import mask_of_scores, query_relevancy
    from sds3d.world import KINDS

    rows = read_rows(path, run)
    done = {(r["kind"], r["part"], r["phrasing"]) for r in rows}
    cases = [(kind, index, part) for kind, spec in KINDS.items() for index, part in enumerate(spec.parts)][:limit]
    for kind, index, part in cases:
        spec = KINDS[kind]
        phrasings = (("the <part>", f"the {part}"), ("the <kind>'s <part>", f"the {spec.synonyms[0]}'s {part}"))
        if all((kind, part, ph) in done for ph, _ in phrasings):
            continue
        gaussians, parts, query_teacher, took = objects.get(kind)
        visible = PartOracle(kind).visible(gaussians.means.detach())
        truth = parts == index
        for phrasing, query in phrasings:
            if (kind, part, phrasing) in done:
                continue
            try:
                score = query_relevancy(gaussians, query, query_teacher, context=kind if context else None)
                mask = mask_of_scores(gaussians, score, 0.5, low_threshold)
            except InputError as error:
                raise SystemExit(f"editing benchmark: {error}") from None
            row = {"run": run, "kind": kind, "part": part, "phrasing": phrasing, "query": query,
                   "iou_visible": round(iou(mask[visible], truth[visible]), 4), "iou_all": round(iou(mask, truth), 4),
                   "distill_seconds": round(took, 2)}
            rows.append(row)
            append_row(path, row)
    return rows


def recolour_cases(limit: int | None, objects: tuple[tuple[str, str], ...] | None = None) -> list[tuple[str, int, str, str]]:
    """(kind, part index, part, colour) for every part of the multi-part kinds among `objects`
    ((kind, object colour) pairs; default: every kind in red); the colour cycles through the named
    colours, skipping the part's own paint and the object's colour."""
    from sds3d.world import COLORS, KINDS
    from sds3d.world.colors import part_rgb

    cases = []
    for kind, body in objects or tuple((kind, "red") for kind in KINDS):
        spec, names = KINDS[kind], [n for n in COLORS if n != body]
        if len(spec.parts) < 2:
            continue
        for index, (part, paint) in enumerate(spec.parts.items()):
            own = nearest_color(torch.tensor(COLORS[body].rgb if paint == "body" else part_rgb(paint, COLORS[body].rgb)))
            turn = [names[(len(cases) + j) % len(names)] for j in range(len(names))]
            cases.append((kind, index, part, next(c for c in turn if c != own)))
    return cases[:limit]


def recolour_table(objects: Objects, evaluator, path: Path, run: str, limit: int | None,
                   context: bool = True, low_threshold: float = 0.5) -> tuple[list[dict], list[np.ndarray]]:
    from sds3d.evaluate import evaluation_cameras

    rows = read_rows(path, run)
    done = {(r["kind"], r["part"], r["colour"]) for r in rows}
    cameras = evaluation_cameras()
    pictures = []
    for kind, index, part, colour in recolour_cases(limit):
        if (kind, part, colour) in done:
            continue
        gaussians, parts, query_teacher, _ = objects.get(kind)  # distillation needs gradients
        row, picture = measure_recolour(gaussians, parts, query_teacher, evaluator, cameras, kind, index, part, colour,
                                        context=kind if context else None, low_threshold=low_threshold)
        row = {"run": run, **row}
        rows.append(row)
        append_row(path, row)
        if len(pictures) < 6:
            pictures.append(picture)
    return rows, pictures


@torch.no_grad()
def measure_recolour(gaussians, parts, query_teacher, evaluator, cameras, kind, index, part, colour,
                     context: str | None = None, low_threshold: float = 0.5):
    """-> (row, uint8 [3, H, W, 3] before / selection / after at one evaluation view); `context`
    (what the object is) and `low_threshold` for `select_points`."""
    from sds3d.errors import InputError
    from sds3d.evaluate import evaluation_cameras, render_for_evaluator
    from sds3d.features.operations import copy_asset, recolour
    from sds3d.features.select import render_highlight, select_points
    from sds3d.guidance.edit.region import render_point_mask

    query = f"the {part}"
    try:
        mask = select_points(gaussians, query, query_teacher, context=context, low_threshold=low_threshold)
    except InputError as error:
        mask = torch.zeros(len(gaussians), dtype=torch.bool)
        print(f"editing benchmark: {error}", file=sys.stderr)
    judge_cameras = evaluation_cameras(resolution=JUDGE_RESOLUTION)
    truth = parts == index
    coverage = render_point_mask(gaussians, judge_cameras, truth)[..., 0]  # [B, H, W]
    part_pixels, outside = coverage > 0.5, coverage < 0.5
    before = gaussians.render(judge_cameras).rgb.clamp(0, 1)

    def recoloured(selection):
        edited = copy_asset(gaussians)
        recolour(edited, selection, colour)
        return edited, edited.render(judge_cameras).rgb.clamp(0, 1)

    def judge(after) -> list[bool]:
        return [nearest_color(after[b][part_pixels[b]].mean(0)) == colour
                for b in range(len(judge_cameras)) if int(part_pixels[b].sum()) >= 4]

    edited, after = recoloured(mask)
    judged, ceiling = judge(after), judge(recoloured(truth)[1])
    images, _ = render_for_evaluator(edited, cameras)
    kinds = evaluator.predict(images)["kind"]
    row = {"kind": kind, "part": part, "colour": colour, "instruction": f"make the {part} {colour}",
           "method": "select_points + recolour", "selected": int(mask.sum()), "true": int((parts == index).sum()),
           "selection_iou": round(iou(mask, parts == index), 4), "views_judged": len(judged),
           "part_color_acc": round(sum(judged) / len(judged), 4) if judged else None,
           "part_color_acc_true_selection": round(sum(ceiling) / len(ceiling), 4) if ceiling else None,
           "outside_psnr_db": round(psnr(after[outside], before[outside]), 2),
           "kind_acc_after": round(float(np.mean([k == kind for k in kinds])), 4)}
    view = evaluation_cameras(resolution=GRID_SIZE)[[1]]
    return row, np.concatenate([
        (gaussians.render(view).rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy(),
        render_highlight(gaussians, mask, view),
        (edited.render(view).rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()])


def run_edit(case_source: str, kind: str, colour: str, target: str, guidance: str, points: int, steps: int,
             work: Path, prior, evaluate: bool = True, prior_spec: str = "embedded") -> dict:
    """One edit of the micro-world `kind` in `colour` as Gaussians; `prior` is the loaded `prior_spec`."""
    from sds3d.edit import EditConfig, edit
    from sds3d.representations.convert import mesh_to_gaussians
    from sds3d.world import make_object

    source = mesh_to_gaussians(make_object(kind, colour).mesh, points, generator=torch.Generator().manual_seed(0))
    config = EditConfig(steps=steps, device="cpu", checkpoint_every=0, turntable_frames=8, turntable_resolution=64,
                        prior=prior_spec)
    start = time.perf_counter()
    result = edit(source, target, source_prompt=case_source, guidance=guidance, config=config,
                  out=str(work / f"{guidance}-{kind}-{points}-{steps}"), prior=prior, progress=False, evaluate=evaluate)
    return {**result.metrics, "total_seconds": round(time.perf_counter() - start, 2)}


def default_guidance_scale(guidance: str) -> float:
    """The editing score's default CFG scale (`EditConfig().<guidance>.guidance_scale`), kept in each
    global row so that a changed default is measured again."""
    from sds3d.edit import EditConfig

    return float(getattr(EditConfig(), guidance).guidance_scale)


def global_table(path: Path, limit: int | None, points: int, steps: int, work: Path, prior_loader,
                 guidances: tuple[str, ...] = GUIDANCES, prior_spec: str = "embedded") -> list[dict]:
    rows = read_rows(path, prior_spec)
    done = {(r["guidance"], r["source"], r["target"], r["steps"], r["gaussians"], r.get("guidance_scale"))
            for r in rows}
    for edit_type, kind, colour, source, target, target_kind, target_colour in GLOBAL_CASES[:limit]:
        for guidance in guidances:
            if (guidance, source, target, steps, points, default_guidance_scale(guidance)) in done:
                continue
            m = run_edit(source, kind, colour, target, guidance, points, steps, work, prior_loader(),
                         prior_spec=prior_spec)
            row = {"run": prior_spec, "guidance": guidance, "guidance_scale": default_guidance_scale(guidance),
                   "edit": edit_type, "source": source, "target": target, "steps": steps, "gaussians": points,
                   "target_acc": m["color_acc"] if edit_type == "colour" else m["kind_acc"],
                   "kind_acc": m["kind_acc"], "color_acc": m["color_acc"],
                   "chamfer_to_source": round(m["chamfer_to_source"], 4), "seconds": m["seconds"]}
            rows.append(row)
            append_row(path, row)
    return [r for r in rows if r["steps"] == steps and r["gaussians"] == points and r["guidance"] in guidances
            and r.get("guidance_scale") == default_guidance_scale(r["guidance"])]


def speed_table(path: Path, steps: int | None, threads: int, work: Path, prior_loader,
                prior_spec: str = "embedded") -> dict:
    from sds3d.edit import EditConfig

    steps = steps or EditConfig.steps
    for row in read_rows(path, prior_spec):
        if (row["steps"], row["threads"], row["cpu"], row.get("prior_precision", "fp32")) == (
                steps, threads, cpu_model(), EditConfig.prior_precision):
            return row
    m = run_edit("a red mug", "mug", "red", "a blue mug", "pds", 20000, steps, work, prior_loader(),
                 prior_spec=prior_spec)
    per_step = m["seconds"] / steps
    row = {"run": prior_spec, "guidance": "pds", "gaussians": 20000, "steps": steps,
           "default_steps": EditConfig.steps, "views_per_step": EditConfig.views_per_step,
           "resolution": EditConfig.resolution, "seconds": m["seconds"], "seconds_per_step": round(per_step, 3),
           "projected_default_seconds": round(per_step * EditConfig.steps, 1),
           "steps_within_60s": int(60 // per_step), "color_acc": m["color_acc"],
           "chamfer_to_source": round(m["chamfer_to_source"], 4), "prior_precision": EditConfig.prior_precision,
           "threads": threads, "cpu": cpu_model()}
    append_row(path, row)
    return row


def save_grid(pictures: list[np.ndarray], path: Path) -> None:
    """Columns = cases; rows = before / selection (highlighted) / after."""
    from sds3d.turntable import image_grid, save_png

    images = np.stack([pictures[c][r] for r in range(3) for c in range(len(pictures))])
    tmp = path.with_name(path.stem + ".tmp.png")
    save_png(image_grid(images, columns=len(pictures)), tmp)
    os.replace(tmp, path)


def generated_tables(folder: str, teacher_arg: str, teacher, config, evaluator, out: Path, run: str,
                     context: bool, low_threshold: float) -> dict:
    """Selection and recolour on the generated assets in `folder` (`editing_generated`) as `run`, their
    prompts as the context when `context`, grown to `low_threshold` -> their summary."""
    from editing_generated import GeneratedAssets, generated_recolour_table, generated_selection_table

    if teacher_arg == "oracle":
        raise SystemExit("editing benchmark: --generated needs a 2D teacher; the part oracle knows only the meshes")
    assets = GeneratedAssets(folder, teacher, config, use_prompt=context, low_threshold=low_threshold)
    selection, pictures = generated_selection_table(assets, out / "generated_selection.jsonl", run)
    recolour = generated_recolour_table(assets, evaluator, out / "generated_recolour.jsonl", run, selection)
    if pictures:
        save_grid(pictures, out / f"generated_grid-{run}.png")
    present = [r for r in selection if not r["absent"]]
    return {"folder": str(folder), "assets": len(assets.runs), "selection_iou": mean(r["iou"] for r in present),
            "selection_iou_unweighted": mean(r["iou_unweighted"] for r in present),
            "selection_queries": len(present), "absent_part_queries": len(selection) - len(present),
            "labelled_fraction": mean(r["labelled_fraction"] for r in selection),
            "recolour_part_acc": mean(r["part_color_acc"] for r in recolour),
            "recolour_part_acc_true_selection": mean(r["part_color_acc_true_selection"] for r in recolour),
            "outside_psnr_db": mean(r["outside_psnr_db"] for r in recolour), "recolour_cases": len(recolour)}


def mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return round(sum(values) / len(values), 4) if values else None


def main(argv: list[str] | None = None) -> dict:
    from sds3d.errors import InputError
    from sds3d.features.distill import DistillConfig
    from sds3d.features.select import DEFAULT_LOW_THRESHOLD
    from sds3d.world.evaluator import Evaluator

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=None, help="cases per table (default: all)")
    p.add_argument("--teacher", default="shipped", help="shipped (the oracle if absent) | oracle | a teacher folder")
    p.add_argument("--points", type=int, default=5000, help="Gaussians per object (selection, recolour, global)")
    p.add_argument("--distill-steps", type=int, default=DistillConfig.steps)
    p.add_argument("--global-steps", type=int, default=200, help="edit steps of the global edits")
    p.add_argument("--global-limit", type=int, default=None, help="cases of the global table (default: --limit)")
    p.add_argument("--guidances", default=",".join(GUIDANCES), help="editing scores of the global table")
    p.add_argument("--speed-steps", type=int, default=0, help="steps of the 20k-Gaussian timing (0: the default)")
    p.add_argument("--tables", default=",".join(TABLES), help="comma-separated subset of " + ",".join(TABLES))
    p.add_argument("--prior", default="embedded", help="prior for the edits (embedded | toy, ...)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-context", action="store_true", help="select without telling the selection what the "
                   "object is (its kind: the source prompt that `sds3d edit` always has)")
    p.add_argument("--low-threshold", type=float, default=DEFAULT_LOW_THRESHOLD, help="grow selections to "
                   "neighbours above this (select_points' hysteresis; 0.5: no growth)")
    p.add_argument("--generated", default="", help="a folder of generated runs (text_to_3d.py --out): "
                   "selection and recolour on them too (editing_generated.py)")
    p.add_argument("--out", default=str(RESULTS), help="folder of the tables, pictures and summary.jsonl")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tables = set(args.tables.split(","))
    tables |= {"generated"} if args.generated else set()
    if not tables <= {*TABLES, "generated"}:
        raise SystemExit(f"editing benchmark: --tables {args.tables!r}: choose among {', '.join(TABLES)}, generated")
    if "generated" in tables and not args.generated:
        raise SystemExit("editing benchmark: the generated table needs --generated DIR (a folder of generated runs)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    teacher_arg, teacher, name = args.teacher, None, args.teacher
    if args.teacher != "oracle":
        from sds3d.features.load import load_feature_teacher

        try:
            teacher = load_feature_teacher(None if args.teacher == "shipped" else args.teacher)
            name = shipped_name(teacher) if args.teacher == "shipped" else Path(args.teacher).name
        except InputError as error:
            if args.teacher != "shipped":
                raise SystemExit(f"editing benchmark: {error}") from None
            print(f"editing benchmark: {error}; using the ground-truth part oracle", file=sys.stderr)
            teacher_arg, name = "oracle", "oracle"
    objects = Objects(teacher, teacher_arg, args.points, args.distill_steps)
    evaluator = Evaluator.load()
    prior = []

    def prior_loader():
        from sds3d.guidance.registry import load_prior

        if not prior:
            prior.append(load_prior(args.prior, "cpu"))
        return prior[0]

    context = not args.no_context
    low = args.low_threshold
    rule = ("-context" if context else "") + grown_suffix(low)
    objects_run = f"{name}-{args.points}{rule}"  # the micro-world objects' tables
    runs = {"selection": objects_run, "recolour": objects_run, "generated": name + rule,
            "global": args.prior, "speed": args.prior}  # the `run` of each table's rows
    selection = selection_table(objects, out / "selection.jsonl", runs["selection"], args.limit, context, low) \
        if "selection" in tables else []
    recolour_rows, pictures = (recolour_table(objects, evaluator, out / "recolour.jsonl", runs["recolour"],
                                              args.limit, context, low) if "recolour" in tables else ([], []))
    if pictures:
        save_grid(pictures, out / "grid.png")
    generated = generated_tables(args.generated, teacher_arg, teacher, objects.config, evaluator, out,
                                 runs["generated"], context, low) if "generated" in tables else None
    work = Path(tempfile.mkdtemp(prefix="sds3d-editing-"))
    global_limit = args.global_limit if args.global_limit is not None else args.limit
    global_rows = [] if "global" not in tables else global_table(out / "global.jsonl", global_limit, args.points,
                                                           args.global_steps, work, prior_loader,
                                                           tuple(g for g in args.guidances.split(",") if g),
                                                           prior_spec=args.prior)
    speed = None if "speed" not in tables else speed_table(out / "speed.jsonl", args.speed_steps, args.threads,
                                                     work, prior_loader, prior_spec=args.prior)
    summary = {
        "selection_iou": mean(r["iou_visible"] for r in selection),
        "recolour_part_acc": mean(r["part_color_acc"] for r in recolour_rows),
        "recolour_part_acc_true_selection": mean(r["part_color_acc_true_selection"] for r in recolour_rows),
        "outside_psnr_db": mean(r["outside_psnr_db"] for r in recolour_rows),
        # one edit at the default settings: measured, or projected from the seconds per step of a shorter run
        "edit_seconds": None if not speed else (speed["seconds"] if speed["steps"] == speed["default_steps"]
                                                else speed["projected_default_seconds"]),
        "edit_seconds_projected": bool(speed and speed["steps"] != speed["default_steps"]),
        "global": {g: {"target_acc": mean(r["target_acc"] for r in global_rows if r["guidance"] == g),
                       "chamfer_to_source": mean(r["chamfer_to_source"] for r in global_rows if r["guidance"] == g),
                       "seconds": mean(r["seconds"] for r in global_rows if r["guidance"] == g)}
                   for g in GUIDANCES if any(r["guidance"] == g for r in global_rows)},
        "generated": generated,
        "context": context, "low_threshold": low, "teacher": name,
        "selection_iou_all_gaussians": mean(r["iou_all"] for r in selection),
        "selection_queries": len(selection), "recolour_cases": len(recolour_rows),
        "recolour_kind_acc_after": mean(r["kind_acc_after"] for r in recolour_rows),
        "recolour_method": "select_points + operations.recolour", "points": args.points,
        "global_steps": args.global_steps, "global_cases": len(global_rows), "prior": args.prior, "speed": speed,
        "limit": args.limit, "threads": args.threads, "cpu": cpu_model(),
        "tables": sorted(tables),  # a table not run leaves its figures null
        "runs": {table: runs[table] for table in sorted(tables)},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with open(out / "summary.jsonl", "a") as stream:
        stream.write(json.dumps(summary) + "\n")
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
