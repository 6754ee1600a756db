"""Retrieval-augmented score distillation on the micro-world suite, against plain SDS in the same run.

    python benchmarks/retrieval.py [--limit N] [--kinds a,b] [--steps N] [--variants 3] [--k 3]
                                   [--adapt-steps N] [--no-ablation | --ablation both,adapt_only]
                                   [--no-adaptation-check] [--prior embedded-v2]
                                   [--out runs/retrieval] [--results DIR] [--threads 1]

Prompts and seeds: those of `benchmarks/text_to_3d.py` (28 kinds, colours cycled, seed 0), scored
by its evaluation (`sds3d.evaluate.evaluate_asset`: kind, colour, Janus, Chamfer, shape accuracy).
Per prompt, with the embedded prior (`--prior`: another shipped prior or a prior folder) and Gaussians
on the `v1` preset's views and densification:
- sds: plain SDS;
- variant: SDS with retrieval as `sds3d generate --retrieve` does it by default, from a library of
  shape variants of every kind (`sds3d.world.variants`, `--variants` per kind, never the suite's
  meshes; built once under `<out>/library_variants`): the run initialised from the best of the top
  K assets, the prior as it is (the arm `init_only`);
- leave_kind_out: the same, from the library without the prompt's kind, retrieval optional (when
  nothing is close to the prompt the run is plain SDS, as `--retrieve-optional` does);
- ablation (variant library): init only (the default), adaptation only, both (the prior LoRA-adapted
  on the top K assets, as ReDream; `--adapt`).
`seconds` is the run's time plus retrieval and initialisation; the adaptation's cost is reported apart
(`adapt_seconds`: the LoRA training's seconds for the retrieved asset set, also when a later run of
the same set loads it from the cache, which costs well under a second).

The adaptation check: the prior adapted on `--k` red mug variants; samples at the four view words
("a red mug, back view", DDIM 20, compositional view guidance), the evaluator's view and kind
accuracy before and after, and the denoising loss on held-out renders per view bin (lower and
flatter across views is what the adaptation is for).

`--calibration` scores the prompts' ground-truth objects and a shape variant of each instead (the
scores' ceilings: the evaluator sees Janus faces and the shape score misses kinds even there;
calibration.jsonl).

Writes benchmarks/results/retrieval/{per_prompt,summary,adaptation}.jsonl and grid.png (per prompt:
the retrieved assets' front views, the SDS result, the retrieval result; 4 views each), and prints
JSON last: {"sds"|"variant"|"leave_kind_out": {kind_acc, color_acc, janus_rate, shape_acc, chamfer,
seconds, adapt_seconds}, "ablation": {"init_only"|"adapt_only"|"both": {...}}, "adaptation": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sds3d.hardware import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parent))

from text_to_3d import suite  # noqa: E402  (the same 28 prompts)

RESULTS = Path(__file__).resolve().parent / "results" / "retrieval"
METRICS = ("kind_acc", "color_acc", "janus_rate", "shape_acc", "chamfer", "seconds", "adapt_seconds")
ARMS = {  # arm -> (library split, adapt, init); its runs go to <out>/<arm>
    "init_only": ("variant", False, True),  # the default uses: retrieval.adapt is off outside redream
    "leave_kind_out": ("leave_kind_out", False, True),
    "both": ("variant", True, True),
    "adapt_only": ("variant", True, False),
}
DEFAULT_ARM = "init_only"  # the summary's "variant"
ABLATION = ("both", "adapt_only")


def variant_library(folder: Path, variants: int, kinds: list[str] | None = None, progress: bool = True) -> Path:
    """The variant library (`kinds`, default all 28, `variants` each), written and indexed once."""
    from sds3d.retrieval.index import build_index
    from sds3d.world.variants import write_microworld_library

    if not (folder / "library.jsonl").is_file():
        write_microworld_library(folder, variants, kinds=kinds, progress=progress)
    build_index(folder, progress=progress)  # incremental: a built index is reused
    return folder


def without_kind(index, kind: str):
    """The loaded index `index` with the assets tagged `kind` left out (the leave-kind-out library)."""
    from sds3d.retrieval.index import LibraryIndex

    keep = [row for row, asset in enumerate(index.assets) if (asset.tags or {}).get("kind") != kind]
    manifest = {**index.manifest, "assets": [index.manifest["assets"][row] for row in keep]}
    rows = torch.tensor(keep, dtype=torch.long)
    tensors = {"text": index.text[rows], "image": index.image[rows], "image_views": index.image_views[rows],
               "front_probability": index.front_probability[rows]}
    return LibraryIndex(index.folder, manifest, tensors)


def run(config, prior, initial=None):
    """(representation, metrics) of `config` from `initial` representations when given."""
    from sds3d.generate import generate

    result = generate(config, prior=prior, progress=False, initial=initial)
    return result.representation, result.metrics


def finished(config, retrieved=None):
    """(representation, row) of a run of exactly this config that this benchmark finished and scored
    before (`<out>/bench_row.json`), from the same `retrieved` assets (a list of `Retrieved`, in
    order, with their yaws) when given, else (None, None): an interrupted benchmark re-runs only the
    rest, and a change of what retrieval finds re-runs the arms it changed. The row's retrieval
    scores are today's."""
    from text_to_3d import finished_run

    path = Path(config.out) / "bench_row.json"
    if not path.is_file():
        return None, None
    row = json.loads(path.read_text())
    if retrieved is not None:
        now = [{k: v for k, v in item.as_dict().items() if k != "tags"} for item in retrieved]
        placed = [(r["path"], r["yaw_degrees"]) for r in row.get("retrieved", [])]
        if placed != [(r["path"], r["yaw_degrees"]) for r in now]:
            return None, None
        row["retrieved"] = now
    representation, _ = finished_run(config)
    return (representation, row) if representation is not None else (None, None)


def remember(config, row: dict) -> dict:
    """Stores a scored run's row beside it (see `finished`) and returns it."""
    path = Path(config.out) / "bench_row.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(row))
    os.replace(tmp, path)
    return row


def scored(representation, metrics: dict, prompt: str, evaluator, extra_seconds: float = 0.0,
           adapt_seconds: float = 0.0) -> dict:
    from sds3d.evaluate import evaluate_asset

    scores = evaluate_asset(representation, prompt, evaluator)
    return {"kind_acc": scores["kind_acc"], "color_acc": scores["color_acc"], "janus_rate": scores["janus_rate"],
            "shape_acc": scores["shape_acc"], "shape_rank": scores["shape_rank"],
            "chamfer": round(scores["chamfer"], 4), "seconds": round(metrics["seconds"] + extra_seconds, 1),
            "adapt_seconds": round(adapt_seconds, 1)}


def mean_of(rows: list[dict]) -> dict:
    out = {}
    for key in METRICS:
        values = [row[key] for row in rows if row.get(key) is not None]
        out[key] = round(statistics.mean(values), 4) if values else None
    if rows:
        out["seconds"] = round(statistics.median(row["seconds"] for row in rows), 1)
    return out


@torch.no_grad()
def views_of(representation, n: int = 4, resolution: int = 64) -> np.ndarray:
    from sds3d.turntable import render_turntable

    return render_turntable(representation, n_frames=n, resolution=resolution)


def retrieved_views(retrieved: list[dict], k: int, resolution: int = 64) -> np.ndarray:
    """Front views [k, H, W, 3] uint8 of the retrieved assets, as placed (white where fewer)."""
    from sds3d.retrieval.library import load_asset, render_views

    frames = np.full((k, resolution, resolution, 3), 255, dtype=np.uint8)
    for i, item in enumerate(retrieved[:k]):
        image = render_views(load_asset(item["path"], item["yaw_degrees"]), azimuths=(0.0,), resolution=resolution,
                             render_resolution=resolution)[0]
        frames[i] = (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    return frames


def save_grid(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: Path) -> None:
    """One row per prompt: its text, the retrieved assets, 4 SDS views, 4 retrieval views."""
    from PIL import Image, ImageDraw

    tile = rows[0][2].shape[1]
    label_width = 170
    width = label_width + tile * (len(rows[0][1]) + 8) + 2 * 8
    canvas = Image.new("RGB", (width, (tile + 16) * len(rows) + 16), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((label_width, 2), "retrieved (front)", fill="black")
    draw.text((label_width + tile * len(rows[0][1]) + 8, 2), "SDS", fill="black")
    draw.text((label_width + tile * (len(rows[0][1]) + 4) + 16, 2), "SDS + retrieval", fill="black")
    for r, (prompt, retrieved, sds, ours) in enumerate(rows):
        y = 16 + r * (tile + 16)
        draw.text((4, y + tile // 2 - 6), prompt, fill="black")
        x = label_width
        for group in (retrieved, sds, ours):
            for image in group:
                canvas.paste(Image.fromarray(image), (x, y))
                x += tile
            x += 8
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    canvas.save(tmp)
    os.replace(tmp, path)


def adaptation_check(prior, evaluator, library: Path, settings, samples: int, progress: bool) -> dict:
    """View / kind accuracy of samples at the four view words, and held-out denoising loss per view
    bin, before and after adapting on the library's mug variants (recoloured red in the captions'
    colour: their files, captions as the library has them)."""
    from sds3d.guidance.priors.embedded_prior import sample
    from sds3d.retrieval.adapt import AdaptationAsset, adapt_prior, denoising_loss, render_view_set
    from sds3d.retrieval.library import read_entries

    entries = [entry for entry in read_entries(library) if (entry.tags or {}).get("kind") == "mug"]
    assets = [AdaptationAsset(entry.path(library), 0.0, entry.caption) for entry in entries]
    adapted, record = adapt_prior(prior, assets, settings.adaptation, settings.cache_dir or None, progress)
    views = ("front", "side", "back", "overhead")
    color = entries[0].caption.split()[1]
    prompts = [f"a {color} mug, {view} view" for view in views]
    held_out = render_view_set(prior, assets, 16, settings.adaptation.render_resolution, 1.0, seed=999)
    out = {"assets": [str(a.path.name) for a in assets], "train_seconds": record.get("train_seconds"),
           "steps": record.get("steps"), "cached": record["cached"], "prompts": prompts}
    for name, model in (("before", prior), ("after", adapted)):
        images = sample(prompts, n=samples, steps=20, seed=0, unet=model.unet, scheduler=model.scheduler,
                        text_encoder=model.text_encoder)
        predicted = evaluator.predict(images)
        wanted = [view for view in views for _ in range(samples)]
        losses = denoising_loss(model, held_out)
        per_bin = {b: round(float(losses[[i for i, x in enumerate(held_out.bins) if x == b]].mean()), 4)
                   for b in views if b in held_out.bins}
        out[name] = {"view_acc": round(float(np.mean([p == w for p, w in zip(predicted["view"], wanted)])), 4),
                     "per_view": {v: round(float(np.mean([predicted["view"][i] == v for i in range(len(wanted))
                                                          if wanted[i] == v])), 4) for v in views},
                     "kind_acc": round(float(np.mean([k == "mug" for k in predicted["kind"]])), 4),
                     "held_out_loss": round(float(losses.mean()), 4), "held_out_loss_per_view": per_bin,
                     "held_out_loss_spread": round(max(per_bin.values()) - min(per_bin.values()), 4)}
    return out


def calibration(prompts: list[str], evaluator, seed: int = 0) -> list[dict]:
    """The scores' ceilings per prompt: its ground-truth object and one shape variant (as the variant
    library holds them), each as 20k surface Gaussians, scored like a run's asset."""
    from sds3d.representations.convert import mesh_to_gaussians
    from sds3d.world import make_object, parse_prompt
    from sds3d.world.variants import make_variant

    rows = []
    for prompt in prompts:
        kind, color, _ = parse_prompt(prompt)
        for name, mesh in (("truth", make_object(kind, color).mesh), ("variant", make_variant(kind, color, seed).mesh)):
            gaussians = mesh_to_gaussians(mesh, num_points=20000, generator=torch.Generator().manual_seed(seed))
            rows.append({"prompt": prompt, "object": name,
                         **scored(gaussians, {"seconds": 0.0}, prompt, evaluator)})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(tmp, path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--kinds", help="comma-separated subset of kinds, e.g. mug,chair")
    parser.add_argument("--steps", type=int, default=600, help="distillation steps per run (default 600)")
    parser.add_argument("--variants", type=int, default=3, help="shape variants per kind in the library")
    parser.add_argument("--k", type=int, default=3, help="assets retrieved per prompt")
    parser.add_argument("--adapt-steps", type=int, help="LoRA steps of the adaptation (default: the library's)")
    parser.add_argument("--library-kinds", help="kinds in the variant library (default all 28; tests use a few)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override per run")
    parser.add_argument("--no-ablation", action="store_true", help="run only the default uses (init only)")
    parser.add_argument("--ablation", default=",".join(ABLATION),
                        help=f"ablation arms beside the default's init only (comma-separated among "
                             f"{', '.join(ABLATION)})")
    parser.add_argument("--no-adaptation-check", action="store_true")
    parser.add_argument("--calibration", action="store_true",
                        help="only score the prompts' ground-truth objects and a shape variant of each (the ceilings)")
    parser.add_argument("--samples", type=int, default=6, help="samples per view word in the adaptation check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior", default="embedded", help="prior: embedded (default), embedded-v2 or a prior folder")
    parser.add_argument("--out", default="runs/retrieval")
    parser.add_argument("--results", default=str(RESULTS), help="where the JSONL tables and grid.png go")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    progress = not args.quiet

    from sds3d.config import apply_override
    from sds3d.generate import GenerateConfig
    from sds3d.guidance.registry import load_prior
    from sds3d.presets import apply_preset
    from sds3d.retrieval.index import LibraryIndex
    from sds3d.retrieval.retrieve import retrieve
    from sds3d.retrieval.run import RetrievalConfig, prepare_retrieval
    from sds3d.world import parse_prompt
    from sds3d.world.evaluator import Evaluator

    out, results = Path(args.out), Path(args.results)
    prompts = suite(args.kinds)[: args.limit]
    if args.calibration:
        rows = calibration(prompts, Evaluator.load(), args.seed)
        write_jsonl(results / "calibration.jsonl", rows)
        summary = {name: mean_of([row for row in rows if row["object"] == name]) for name in ("truth", "variant")}
        print(json.dumps({**summary, "prompts": len(prompts), "cpu": cpu_model()}))
        return summary
    settings = RetrievalConfig(k=args.k, cache_dir=str(out / "adapted_priors"))
    if args.adapt_steps is not None:
        settings.adaptation.steps = args.adapt_steps
    started = time.perf_counter()
    kinds = None if args.library_kinds is None else [k.strip() for k in args.library_kinds.split(",") if k.strip()]
    library = variant_library(out / "library_variants", args.variants, kinds, progress)
    build_seconds = round(time.perf_counter() - started, 1)
    prior, evaluator = load_prior(args.prior), Evaluator.load()
    index = LibraryIndex.load(library)
    ablation = [arm for arm in args.ablation.split(",") if arm]
    if set(ablation) - set(ABLATION):
        raise SystemExit(f"retrieval benchmark: --ablation {args.ablation!r}: choose among {', '.join(ABLATION)}")
    arms = [DEFAULT_ARM, "leave_kind_out"] + ([] if args.no_ablation else ablation)
    per_prompt, pictures = [], []
    for prompt in prompts:
        kind = parse_prompt(prompt)[0]
        config = apply_preset(GenerateConfig(prompt=prompt, seed=args.seed, preview_every=0,
                                             out=str(out / "sds" / prompt.replace(" ", "_"))), "v1")
        config = replace(config, prior=args.prior, steps=args.steps)  # on v1's views and densification
        for assignment in args.set:
            config = apply_override(config, assignment)
        sds_rep, sds_row = finished(config)
        if sds_rep is None:
            sds_rep, sds_metrics = run(config, prior)
            sds_row = remember(config, scored(sds_rep, sds_metrics, prompt, evaluator))
        row = {"prompt": prompt, "sds": sds_row}
        found, libraries = {}, {"variant": index, "leave_kind_out": without_kind(index, kind)}
        for split, library_index in libraries.items():
            t0 = time.perf_counter()
            found[split] = retrieve(prompt, library_index, k=args.k, candidates=settings.candidates, prior=prior,
                                    optional=True, seed=args.seed)
            found[split + "_seconds"] = time.perf_counter() - t0
        # retrieval's own cost, measured in this pass (a reused run's `seconds` are from the pass that made it)
        row["retrieve_seconds"] = {split: round(found[split + "_seconds"], 1) for split in libraries}
        ours_rep = None
        for arm in arms:
            split, adapt, init = ARMS[arm]
            retrieved = found[split]
            if not retrieved:  # nothing close: the run is plain SDS (--retrieve-optional), the same config
                row[arm] = {**sds_row, "seconds": round(sds_row["seconds"] + found[split + "_seconds"], 1),
                            "retrieved": [], "skipped": "nothing close to the prompt"}
                continue
            arm_config = replace(config, out=str(out / arm / prompt.replace(" ", "_")))
            representation, row[arm] = finished(arm_config, retrieved)
            if representation is not None:
                if arm == DEFAULT_ARM:
                    ours_rep = representation
                continue
            initial, arm_prior, record = prepare_retrieval(arm_config, libraries[split], args.k,
                                                           adapt, init, settings=settings, prior=prior,
                                                           retrieved=retrieved, progress=progress)
            representation, metrics = run(arm_config, arm_prior, initial)
            extra = found[split + "_seconds"] + record["seconds"].get("init", 0.0)
            adapt_seconds = record.get("adaptation", {}).get("train_seconds", 0.0)  # also when the cache served it
            row[arm] = remember(arm_config, {
                **scored(representation, metrics, prompt, evaluator, extra, adapt_seconds),
                "retrieved": [{k: v for k, v in item.items() if k != "tags"} for item in record["retrieved"]],
                "adaptation": {k: v for k, v in record.get("adaptation", {}).items() if k != "config"}})
            if arm == DEFAULT_ARM:
                ours_rep = representation
        per_prompt.append(row)
        print(json.dumps(row), flush=True)
        if ours_rep is not None:
            pictures.append((prompt, retrieved_views(row[DEFAULT_ARM]["retrieved"], args.k), views_of(sds_rep),
                             views_of(ours_rep)))
    summary = {"sds": mean_of([row["sds"] for row in per_prompt]),
               "variant": mean_of([row[DEFAULT_ARM] for row in per_prompt]),
               "leave_kind_out": mean_of([row["leave_kind_out"] for row in per_prompt])}
    summary["ablation"] = {arm: mean_of([row[arm] for row in per_prompt]) for arm in (DEFAULT_ARM, *ABLATION)
                           if arm in arms}
    if not args.no_adaptation_check:
        summary["adaptation"] = adaptation_check(prior, evaluator, library, settings, args.samples, progress)
    summary["retrieve_seconds_median"] = statistics.median(row["retrieve_seconds"]["variant"] for row in per_prompt)
    summary.update({"prompts": len(per_prompt), "prior": args.prior, "steps": args.steps, "k": args.k,
                    "variants": args.variants,
                    "adapt_steps": settings.adaptation.steps, "library_build_seconds": build_seconds,
                    "threads": args.threads, "cpu": cpu_model()})
    write_jsonl(results / "per_prompt.jsonl", per_prompt)
    write_jsonl(results / "summary.jsonl", [{"arm": arm, **value} for arm, value in summary.items()
                                            if isinstance(value, dict) and arm not in ("ablation", "adaptation")]
                + [{"arm": f"ablation_{arm}", **value} for arm, value in summary["ablation"].items()])
    if "adaptation" in summary:
        write_jsonl(results / "adaptation.jsonl", [summary["adaptation"]])
    if pictures:
        save_grid(pictures, results / "grid.png")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
