"""Every guidance variant on the same micro-world suite (Gaussians, same seeds), one row each.

    python benchmarks/guidance_table.py [--guidance sds,vsd,...] [--limit N] [--kinds a,b] [--diversity-prompts N]
                                        [--seeds 3] [--steps N] [--out runs/guidance_table] [--set key=value ...]
                                        [--ledger benchmarks/results/guidance_table] [--threads 2]
                                        [--recorded-only]   # the table so far, from the ledger alone

Every finished run leaves a small record in `--ledger` (committed with the repository, so a table
that takes more core-hours than one session resumes on a new machine): its settings, its scored row,
its front view (PNG) and, for diversity runs, its evaluator features (float16 .npy). A run whose
record matches its settings is read back instead of re-run, and two processes with `--threads 1`
and disjoint `--guidance` lists can fill one ledger side by side (a last run with every variant
then only reads the records back and writes the grid and the table). Run folders (checkpoints,
turntables) go to `--out`; an interrupted run continues from its checkpoint (every 50 steps) when it
is started again with the same settings. A record is named by variant, prompt and seed only, so give runs with
`--set` or `--steps` their own `--ledger`. `--recorded-only` runs nothing: it summarises the recorded runs (column
`prompts` counts them; 28 when a variant is complete) and leaves blank cells in the grid.

Per variant: the suite of `benchmarks/text_to_3d.py` (seed 0) scored by the evaluator (kind/colour
accuracy over 8 azimuths x 2 elevations, Janus rate on fronted kinds, Chamfer distance), plus

- diversity: for the first `--diversity-prompts` prompts, `--seeds` runs (seeds 0, 1, ...); the
  evaluator's penultimate features of each run's 16 evaluation renders, compared view by view
  between every pair of seeds as 1 - cosine similarity, averaged (0: identical assets);
- saturation: mean HSV saturation, max(rgb)-min(rgb) over max(rgb), of foreground pixels
  (alpha > 0.5) of the evaluation renders (SDS's over-saturation shows here), and the same measure of
  the true objects (meshes on the same cameras) as the reference, `ground_truth_saturation`;
- seconds: median wall time per run; unet_evals_per_step: UNet images evaluated per rendered view
  per step, counted with a forward hook on the UNet (so LoRA and DDIM-path evaluations count).

Writes `<out>/grid.png` (rows: variants; columns: prompts, front view) and `<out>/table.md`, and
prints one JSON line per run, then the table as JSON last: {"rows": [{guidance, kind_acc, ...}],
"ground_truth_saturation": ..., "bar": {kind_acc_bar, met, not_met, incomplete, dsd_more_diverse_than_sds}}
(the issue's bars: kind accuracy within 15 points of SDS's on complete rows, DSD more diverse than SDS).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from sds3d.config import apply_override
from sds3d.evaluate import evaluate_asset, evaluation_cameras, render_for_evaluator
from sds3d.generate import GenerateConfig, generate
from sds3d.guidance.registry import GUIDANCE, load_prior
from sds3d.turntable import image_grid, render_turntable, save_png

from text_to_3d import suite

COLUMNS = ("guidance", "prompts", "kind_acc", "color_acc", "janus_rate", "chamfer", "diversity", "saturation",
           "seconds", "unet_evals_per_step")


class UNetImageCounter:
    """Counts images through `unet.forward` (the batch size of every call)."""

    def __init__(self, unet: torch.nn.Module):
        self.images = 0
        self._handle = unet.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.images += int(args[0].shape[0])

    def close(self) -> None:
        self._handle.remove()


def saturation(rgb: torch.Tensor, alpha: torch.Tensor) -> float:
    """Mean HSV saturation of foreground pixels. rgb [B, H, W, 3] in [0, 1], alpha [B, H, W, 1]."""
    rgb = rgb.clamp(0, 1)[alpha[..., 0] > 0.5]  # [P, 3]
    if len(rgb) == 0:
        return 0.0
    high, low = rgb.max(dim=-1).values, rgb.min(dim=-1).values
    return float(torch.where(high > 0, (high - low) / high.clamp_min(1e-8), torch.zeros_like(high)).mean())


@torch.no_grad()
def ground_truth_saturation(prompts: list[str]) -> float:
    """`saturation` of the micro-world objects themselves (flat-shaded meshes on the evaluation
    cameras), averaged over the prompts: the reference that says whether a variant over-saturates."""
    from sds3d.cuda.mesh_rasterizer import render_trimesh
    from sds3d.world import make_object, parse_prompt

    values = []
    for prompt in prompts:
        kind, color, _ = parse_prompt(prompt)
        output = render_trimesh(make_object(kind, color).mesh, evaluation_cameras())
        values.append(saturation(output.rgb, output.alpha))
    return statistics.mean(values)


def pairwise_feature_distance(features: list[torch.Tensor]) -> float:
    """Mean over seed pairs and views of 1 - cos(f_a[v], f_b[v]); features: per seed [V, D]."""
    distances = [1.0 - torch.nn.functional.cosine_similarity(a, b, dim=-1).mean().item()
                 for a, b in itertools.combinations(features, 2)]
    return float(np.mean(distances))


# settings that change where or how often a run writes, not what it produces
_BOOKKEEPING = ("out", "device", "preview_every", "checkpoint_every", "turntable_frames", "turntable_resolution")


def _settings_used(config: GenerateConfig) -> dict:
    """The settings that determine a run's result: without bookkeeping fields and without the
    sections of the guidance variants it does not use (re-tuning one variant's defaults must not
    invalidate the recorded runs of the others)."""
    return _result_settings(json.loads(json.dumps(asdict(config))))


def _result_settings(settings: dict) -> dict:
    """`_settings_used` of a config given as its JSON dict (as in a run folder's config.json)."""
    return {key: value for key, value in settings.items()
            if key not in _BOOKKEEPING and (key not in GUIDANCE or key == settings["guidance"])}


def resume_point(config: GenerateConfig) -> tuple[int, float]:
    """(step, seconds spent) of an unfinished run's checkpoint in `config.out` written with the same
    settings, so an interrupted table run continues where it stopped; (0, 0.0) if there is none."""
    out = Path(config.out)
    if not (out / "checkpoint.pt").is_file() or not (out / "config.json").is_file():
        return 0, 0.0
    if _result_settings(json.loads((out / "config.json").read_text())) != _settings_used(config):
        return 0, 0.0
    state = torch.load(out / "checkpoint.pt", weights_only=True, map_location="cpu")
    return (state["step"], state["elapsed"]) if state["step"] < config.steps else (0, 0.0)


def run_once(config: GenerateConfig, prior, evaluator, record: Path, keep_features: bool,
             recorded_only: bool = False) -> dict | None:
    """One run, scored: {"row": {...}, "features": [V, D] evaluator features of its 16 renders (None
    unless `keep_features`), "picture": uint8 [1, 64, 64, 3] front view}. `record` (`<name>.json`,
    `.png`, `.features.npy`) holds a finished run; it is read back when its settings match. None if
    there is no such record and `recorded_only`."""
    from PIL import Image

    features_file, picture_file = record.with_suffix(".features.npy"), record.with_suffix(".png")
    if record.is_file() and picture_file.is_file() and (features_file.is_file() or not keep_features):
        saved = json.loads(record.read_text())
        if saved["settings"] == _settings_used(config):
            features = torch.from_numpy(np.load(features_file).astype(np.float32)) if keep_features else None
            return {"row": saved["row"], "features": features, "picture": np.asarray(Image.open(picture_file))[None]}
    if recorded_only:
        return None
    start_step, seconds_before = resume_point(config)
    if start_step == 0:  # a checkpoint of other settings or a finished run must not be resumed later
        (Path(config.out) / "checkpoint.pt").unlink(missing_ok=True)
    counter = UNetImageCounter(prior.unet)
    start = time.perf_counter()
    try:
        result = generate(config, prior=prior, resume=start_step > 0, progress=False)
    finally:
        counter.close()
    seconds = seconds_before + time.perf_counter() - start
    images, output = render_for_evaluator(result.representation, evaluation_cameras())
    features = evaluator.features(images) if keep_features else None
    scores = evaluate_asset(result.representation, config.prompt, evaluator)
    row = {"guidance": config.guidance, "prompt": config.prompt, "seed": config.seed,
           "kind_acc": scores["kind_acc"], "color_acc": scores["color_acc"], "janus_rate": scores["janus_rate"],
           "chamfer": scores["chamfer"], "saturation": saturation(output.rgb, output.alpha), "seconds": seconds,
           "unet_evals_per_step": counter.images / ((result.metrics["steps"] - start_step) * config.views_per_step)}
    picture = render_turntable(result.representation, n_frames=1, resolution=64)
    record.parent.mkdir(parents=True, exist_ok=True)
    save_png(picture[0], picture_file)
    if keep_features:
        np.save(features_file, features.detach().numpy().astype(np.float16))
    record.write_text(json.dumps({"settings": _settings_used(config), "row": row}, indent=1))
    return {"row": row, "features": features, "picture": picture}


def run_variant(name: str, prompts: list[str], args, prior, evaluator) -> tuple[dict | None, list[np.ndarray]]:
    """(summary over the prompts with a seed-0 run, or None if there is none; front views [1, 64, 64, 3]
    per prompt, blank where a run is missing)."""
    rows, pictures, diversity = [], [], []
    for index, prompt in enumerate(prompts):
        diverse = index < args.diversity_prompts
        features = []
        for seed in range(args.seeds) if diverse else range(1):
            run_name = f"{prompt.replace(' ', '_')}_s{seed}"
            config = GenerateConfig(prompt=prompt, guidance=name, seed=seed, out=str(Path(args.out) / name / run_name))
            if args.steps:
                config.steps = args.steps
            for assignment in args.set:
                config = apply_override(config, assignment)
            run = run_once(config, prior, evaluator, Path(args.ledger) / name / f"{run_name}.json", diverse,
                           args.recorded_only)
            if run is None:
                if seed == 0:
                    pictures.append(np.full((1, 64, 64, 3), 255, dtype=np.uint8))
                continue
            features.append(run["features"])
            if seed == 0:
                rows.append(run["row"])
                pictures.append(run["picture"])
                print(json.dumps(run["row"]), flush=True)
        if len(features) > 1:
            diversity.append(pairwise_feature_distance(features))
    if not rows:
        return None, pictures
    janus = [r["janus_rate"] for r in rows if r["janus_rate"] is not None]
    summary = {"guidance": name, "prompts": len(rows),
               "kind_acc": statistics.mean(r["kind_acc"] for r in rows),
               "color_acc": statistics.mean(r["color_acc"] for r in rows),
               "janus_rate": statistics.mean(janus) if janus else None,
               "chamfer": statistics.mean(r["chamfer"] for r in rows),
               "diversity": statistics.mean(diversity) if diversity else None,
               "saturation": statistics.mean(r["saturation"] for r in rows),
               "seconds": statistics.median(r["seconds"] for r in rows),
               "unet_evals_per_step": statistics.mean(r["unet_evals_per_step"] for r in rows)}
    return summary, pictures


def label_tile(text: str, size: int = 64) -> np.ndarray:
    """uint8 [1, size, size, 3]: `text` in black on white, the row label of the grid."""
    from PIL import Image, ImageDraw

    tile = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(tile).text((4, size // 2 - 6), text, fill="black")
    return np.asarray(tile)[None]


def markdown_table(rows: list[dict]) -> str:
    def cell(value):
        return "–" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


KIND_ACC_MARGIN = 0.15  # the bar: kind accuracy within 15 points of SDS's


def bar_verdicts(rows: list[dict], n_prompts: int, margin: float = KIND_ACC_MARGIN) -> dict:
    """The issue's bars on the summary rows: kind accuracy within `margin` of SDS's, judged on complete
    rows (`prompts` == n_prompts) only, and DSD's diversity above SDS's. Without a complete SDS row
    there is no bar: {"kind_acc_bar": None, ...}."""
    by_name = {row["guidance"]: row for row in rows}
    sds = by_name.get("sds")
    complete = [row for row in rows if row["prompts"] == n_prompts]
    verdicts = {"kind_acc_bar": None, "met": [], "not_met": [],
                "incomplete": [row["guidance"] for row in rows if row["prompts"] != n_prompts],
                "dsd_more_diverse_than_sds": None}
    if sds is None or sds["prompts"] != n_prompts:
        return verdicts
    verdicts["kind_acc_bar"] = sds["kind_acc"] - margin
    for row in complete:
        verdicts["met" if row["kind_acc"] >= verdicts["kind_acc_bar"] - 1e-9 else "not_met"].append(row["guidance"])
    dsd = by_name.get("dsd")
    if dsd is not None and dsd["diversity"] is not None and sds["diversity"] is not None:
        verdicts["dsd_more_diverse_than_sds"] = dsd["diversity"] > sds["diversity"]
    return verdicts


def bar_text(verdicts: dict) -> str:
    if verdicts["kind_acc_bar"] is None:
        return "Bar: needs a complete SDS row.\n"
    def names(key):
        return ", ".join(verdicts[key]) or "none"

    return (f"Bar (kind_acc >= {verdicts['kind_acc_bar']:.3f}, SDS's minus {KIND_ACC_MARGIN}; complete rows): met by "
            f"{names('met')}; not met by {names('not_met')}; incomplete: {names('incomplete')}. "
            f"DSD more diverse than SDS: {verdicts['dsd_more_diverse_than_sds']}.\n")


def main() -> None:
    from sds3d.world.evaluator import Evaluator

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guidance", default=",".join(GUIDANCE), help="comma-separated variant names")
    parser.add_argument("--limit", type=int, help="first N prompts of the suite")
    parser.add_argument("--kinds", help="comma-separated subset of kinds (default: all 28)")
    parser.add_argument("--diversity-prompts", type=int, default=3, help="first N prompts get --seeds seeds")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--out", default="runs/guidance_table", help="run folders (checkpoints, turntables)")
    parser.add_argument("--ledger", default=str(Path(__file__).parent / "results" / "guidance_table"),
                        help="records of finished runs, read back instead of re-running (commit them)")
    parser.add_argument("--recorded-only", action="store_true", help="run nothing; summarise the ledger")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every run (e.g. sds.guidance_scale=20)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 when another job runs)")
    args = parser.parse_args()
    names = [n.strip() for n in args.guidance.split(",") if n.strip()]
    unknown = sorted(set(names) - set(GUIDANCE))
    if unknown:
        parser.error(f"unknown guidance {', '.join(unknown)}; choose from {', '.join(GUIDANCE)}")
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 to measure diversity")
    torch.set_num_threads(args.threads)
    prompts = suite(args.kinds)[: args.limit]
    prior, evaluator = load_prior("embedded"), Evaluator.load()
    summaries, grid_rows = [], []
    for name in names:
        summary, pictures = run_variant(name, prompts, args, prior, evaluator)
        if summary is None:
            continue
        summaries.append(summary)
        grid_rows.append(np.concatenate([label_tile(name)] + pictures))
        print(json.dumps({"summary": summary}), flush=True)
    if not summaries:
        raise SystemExit(f"no recorded runs for {', '.join(names)} in {args.ledger}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_png(image_grid(np.concatenate(grid_rows), columns=len(prompts) + 1), out / "grid.png")
    reference = ground_truth_saturation(prompts)
    verdicts = bar_verdicts(summaries, len(prompts))
    (out / "table.md").write_text(markdown_table(summaries) + f"\nGround-truth saturation: {reference:.3f}\n\n"
                                  + bar_text(verdicts))
    print(json.dumps({"rows": summaries, "ground_truth_saturation": reference, "bar": verdicts}))


if __name__ == "__main__":
    main()
