"""Every guidance variant on the same micro-world suite (Gaussians, same seeds, the `v1` preset), one row each.

    python benchmarks/guidance_table.py [--guidance sds,vsd,...] [--limit N] [--kinds a,b] [--diversity-prompts N]
                                        [--seeds 3] [--steps N] [--out runs/guidance_table] [--set key=value ...]
                                        [--results benchmarks/results/guidance_table] [--threads 2]
                                        [--recorded-only]   # the table from the recorded runs alone
                                        [--publish]         # write a complete table to --results

A table is data: `runs.jsonl` (one line per run: guidance, prompt, seed, settings_hash and its scores),
`settings.jsonl` (one line per distinct settings hash: the resolved config without prompt and seed),
`features.npz` (evaluator features of the diversity runs, float16 [16, D], keyed by run id
`<guidance>/<prompt_with_underscores>_s<seed>`), `pictures.npz` (every run's front view, uint8
[64, 64, 3], same keys), `table.md` and `grid.png`. The committed table is in `--results`; a table being
filled lives in `--out` (outside git): `<out>/runs.jsonl` and `<out>/settings.jsonl` get a line per
finished run, and the run's folder `<out>/<run id>/` (checkpoints, turntable) its `front.png` and
`features.npy`. A run with a recorded line whose settings match is read back instead of re-run, from
`--out` first, then from `--results`; an interrupted run continues from its checkpoint (every 50
steps) when started again with the same settings. Two processes with `--threads 1` and disjoint
`--guidance` lists can fill one `--out` side by side. `--publish` writes the table to `--results` once
every run of it is recorded (commit it then, once); `--recorded-only` runs nothing and summarises the
recorded runs (column `prompts` counts them; 28 when a variant is complete), with blank grid cells.

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
prints one JSON line per seed-0 run, then the table as JSON last: {"rows": [{guidance, kind_acc, ...}],
"ground_truth_saturation": ..., "bar": {kind_acc_bar, met, not_met, incomplete, dsd_more_diverse_than_sds}}.
The bar: kind accuracy within 15 points of SDS's on complete rows (a variant may trade some accuracy
for what it claims, not most of it), and DSD more diverse than SDS (DSD's claim).
"""

from __future__ import annotations

import argparse
import hashlib
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
from sds3d.guidance.registry import GUIDANCE, LIBRARY_GUIDANCE, load_prior
from sds3d.presets import apply_preset
from sds3d.turntable import image_grid, render_turntable, save_png

from text_to_3d import suite

RESULTS = Path(__file__).parent / "results" / "guidance_table"
COLUMNS = ("guidance", "prompts", "kind_acc", "color_acc", "janus_rate", "shape_acc", "chamfer", "diversity",
           "saturation", "seconds", "unet_evals_per_step")
TILE = 64  # front views and grid cells are TILE x TILE


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
_BOOKKEEPING = ("out", "device", "preview_every", "checkpoint_every", "turntable_frames", "turntable_resolution",
                "turntable_format")


def _settings_used(config: GenerateConfig) -> dict:
    """The settings that determine a run's result: without bookkeeping fields and without the
    sections of the guidance variants it does not use (re-tuning one variant's defaults must not
    invalidate the recorded runs of the others)."""
    return _result_settings(json.loads(json.dumps(asdict(config))))


def _result_settings(settings: dict) -> dict:
    """`_settings_used` of a config given as its JSON dict (as in a run folder's config.json)."""
    return {key: value for key, value in settings.items()
            if key not in _BOOKKEEPING and (key not in GUIDANCE or key == settings["guidance"])}


def table_config(**fields) -> GenerateConfig:
    """A run of the table: Gaussians on the `v1` preset (the text-only prior, 600 steps of 4 views),
    the settings its committed runs were made with, so that every variant is compared on them."""
    return apply_preset(GenerateConfig(**fields), "v1")


def run_settings(config: GenerateConfig) -> dict:
    """`_settings_used` without prompt and seed, which a run's line holds: the settings one hash
    stands for, shared by every run of a variant in a table."""
    return {key: value for key, value in _settings_used(config).items() if key not in ("prompt", "seed")}


def settings_hash(settings: dict) -> str:
    """16 hex digits of the SHA-256 of the settings as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def settings_match(recorded: dict, current: dict, defaults: dict) -> bool:
    """Whether a run recorded with `recorded` settings is a run of `current`. A field the record lacks
    was added to the config after the run, with a default that keeps the old behaviour: it matches
    while `current` leaves it at that default (`defaults`: the settings of a default config)."""
    for key in recorded.keys() | current.keys():
        if key not in current:
            return False
        if key not in recorded:
            if current[key] != defaults.get(key):
                return False
        elif isinstance(recorded[key], dict) and isinstance(current[key], dict):
            if not settings_match(recorded[key], current[key], defaults.get(key) or {}):
                return False
        elif recorded[key] != current[key]:
            return False
    return True


def run_id(guidance: str, prompt: str, seed: int) -> str:
    return f"{guidance}/{prompt.replace(' ', '_')}_s{seed}"


class Ledger:
    """The recorded runs of a table in `folder` (layout: the module docstring). The last line of a run
    id in `runs.jsonl` is the one that counts. Front views and features come from `pictures.npz` and
    `features.npz` when present (a published table), else from the run folders `<folder>/<run id>/`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.settings: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        for record in self._lines("settings.jsonl"):  # sections under older names ("mesh") under today's
            self.settings[record["settings_hash"]] = {GenerateConfig.FIELD_ALIASES.get(k, k): v
                                                      for k, v in record["settings"].items()}
        for run in self._lines("runs.jsonl"):
            self.runs[run_id(run["guidance"], run["prompt"], run["seed"])] = run
        self._features = self._arrays("features.npz")
        self._pictures = self._arrays("pictures.npz")

    def _lines(self, name: str) -> list[dict]:
        path = self.folder / name
        return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []

    def _arrays(self, name: str) -> dict[str, np.ndarray] | None:
        path = self.folder / name
        if not path.is_file():
            return None
        with np.load(path) as arrays:
            return dict(arrays)

    def find(self, config: GenerateConfig) -> dict | None:
        """The recorded line of the run of `config` (guidance, prompt, seed) if its settings match, else None."""
        run = self.runs.get(run_id(config.guidance, config.prompt, config.seed))
        if run is None or run["settings_hash"] not in self.settings:
            return None
        current = run_settings(config)
        if run["settings_hash"] == settings_hash(current):
            return run
        defaults = run_settings(table_config(guidance=config.guidance))
        return run if settings_match(self.settings[run["settings_hash"]], current, defaults) else None

    def features(self, key: str) -> torch.Tensor | None:
        """float32 [V, D] evaluator features of run `key`, or None if it has none recorded."""
        if self._features is not None:
            features = self._features.get(key)
        else:
            path = self.folder / key / "features.npy"
            features = np.load(path) if path.is_file() else None
        return None if features is None else torch.from_numpy(features.astype(np.float32))

    def picture(self, key: str) -> np.ndarray:
        """uint8 [TILE, TILE, 3] front view of run `key`."""
        if self._pictures is not None:
            return self._pictures[key]
        from PIL import Image

        return np.asarray(Image.open(self.folder / key / "front.png").convert("RGB"))

    def record(self, config: GenerateConfig, row: dict, picture: np.ndarray, features: torch.Tensor | None) -> dict:
        """Records a finished run (its folder files, a settings line for a new hash, its run line last,
        so that a line always has its files); returns the run line."""
        key, settings = run_id(config.guidance, config.prompt, config.seed), run_settings(config)
        digest = settings_hash(settings)
        folder = self.folder / key
        folder.mkdir(parents=True, exist_ok=True)
        save_png(picture, folder / "front.png")
        if features is None:
            (folder / "features.npy").unlink(missing_ok=True)
        else:
            np.save(folder / "features.npy", features.detach().numpy().astype(np.float16))
        if digest not in self.settings:
            self.settings[digest] = settings
            self._append("settings.jsonl", {"settings_hash": digest, "settings": settings})
        run = {**row, "settings_hash": digest}
        self.runs[key] = run
        self._append("runs.jsonl", run)
        return run

    def _append(self, name: str, record: dict) -> None:
        with open(self.folder / name, "a") as file:  # one write per line: side-by-side workers do not interleave
            file.write(json.dumps(record, separators=(",", ":")) + "\n")


def publish(folder: Path, runs: list[dict], table: str, grid: np.ndarray) -> None:
    """Writes a complete table to `folder`: runs.jsonl, settings.jsonl, features.npz, pictures.npz,
    table.md, grid.png. `runs`: {"run": line, "settings", "features" [V, D] or None, "picture"} in table order."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {}
    for run in runs:
        settings.setdefault(run["run"]["settings_hash"], run["settings"])
    (folder / "runs.jsonl").write_text("".join(json.dumps(run["run"]) + "\n" for run in runs))
    (folder / "settings.jsonl").write_text("".join(json.dumps({"settings_hash": digest, "settings": value}) + "\n"
                                                   for digest, value in settings.items()))
    keys = [run_id(r["run"]["guidance"], r["run"]["prompt"], r["run"]["seed"]) for r in runs]
    np.savez_compressed(folder / "features.npz", **{key: run["features"].numpy().astype(np.float16)
                                                    for key, run in zip(keys, runs) if run["features"] is not None})
    np.savez_compressed(folder / "pictures.npz", **{key: run["picture"] for key, run in zip(keys, runs)})
    (folder / "table.md").write_text(table)
    save_png(grid, folder / "grid.png")


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


def recorded_run(config: GenerateConfig, ledgers: list[Ledger], keep_features: bool) -> dict | None:
    """The run of `config` from the first ledger that holds it with matching settings (and features
    if `keep_features`): {"run", "settings", "features", "picture"}; None if none does."""
    key = run_id(config.guidance, config.prompt, config.seed)
    for ledger in ledgers:
        run = ledger.find(config)
        features = ledger.features(key) if run is not None and keep_features else None
        if run is not None and (features is not None or not keep_features):
            return {"run": run, "settings": ledger.settings[run["settings_hash"]], "features": features,
                    "picture": ledger.picture(key)}
    return None


def run_once(config: GenerateConfig, prior, evaluator, ledger: Ledger, keep_features: bool) -> dict:
    """One run in `config.out`, scored and recorded in `ledger`: {"run": its line, "settings",
    "features": [V, D] evaluator features of its 16 renders (None unless `keep_features`),
    "picture": uint8 [TILE, TILE, 3] front view}."""
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
    features = evaluator.features(images).detach() if keep_features else None
    scores = evaluate_asset(result.representation, config.prompt, evaluator)
    row = {"guidance": config.guidance, "prompt": config.prompt, "seed": config.seed,
           "kind_acc": scores["kind_acc"], "color_acc": scores["color_acc"], "janus_rate": scores["janus_rate"],
           "shape_acc": scores["shape_acc"], "chamfer": scores["chamfer"], "saturation": saturation(output.rgb, output.alpha), "seconds": seconds,
           "unet_evals_per_step": counter.images / ((result.metrics["steps"] - start_step) * config.views_per_step)}
    picture = render_turntable(result.representation, n_frames=1, resolution=TILE)[0]
    run = ledger.record(config, row, picture, features)
    return {"run": run, "settings": ledger.settings[run["settings_hash"]], "features": features, "picture": picture}


def run_variant(name: str, prompts: list[str], args, prior, evaluator, ledger: Ledger,
                results: Ledger) -> list[dict | None]:
    """The runs of one variant in table order (per prompt its seeds), None where a run is missing
    (only with `--recorded-only`)."""
    runs = []
    for index, prompt in enumerate(prompts):
        diverse = index < args.diversity_prompts
        for seed in range(args.seeds) if diverse else range(1):
            config = table_config(prompt=prompt, guidance=name, seed=seed,
                                  out=str(ledger.folder / run_id(name, prompt, seed)))
            if args.steps:
                config.steps = args.steps
            for assignment in args.set:
                config = apply_override(config, assignment)
            run = recorded_run(config, [ledger, results], diverse)
            if run is None and not args.recorded_only:
                run = run_once(config, prior, evaluator, ledger, diverse)
            if run is not None and seed == 0:
                print(json.dumps(run["run"]), flush=True)
            runs.append(run)
    return runs


def summarise(name: str, runs: list[dict]) -> dict | None:
    """A variant's row from its recorded runs ({"run": line, "features"}): means over the seed-0 runs
    (median seconds), diversity over the prompts with features of two seeds or more; None without a
    seed-0 run."""
    rows = [run["run"] for run in runs if run["run"]["seed"] == 0]
    if not rows:
        return None
    features_by_prompt: dict[str, list] = {}
    for run in sorted(runs, key=lambda run: run["run"]["seed"]):
        if run["features"] is not None:
            features_by_prompt.setdefault(run["run"]["prompt"], []).append(run["features"])
    diversity = [pairwise_feature_distance(features) for features in features_by_prompt.values() if len(features) > 1]
    janus = [r["janus_rate"] for r in rows if r["janus_rate"] is not None]
    # runs recorded before shape accuracy existed kept no asset to rescore: no mean over a part of the rows
    shape = [r.get("shape_acc") for r in rows]
    return {"guidance": name, "prompts": len(rows),
            "kind_acc": statistics.mean(r["kind_acc"] for r in rows),
            "color_acc": statistics.mean(r["color_acc"] for r in rows),
            "janus_rate": statistics.mean(janus) if janus else None,
            "shape_acc": None if None in shape else statistics.mean(shape),
            "chamfer": statistics.mean(r["chamfer"] for r in rows),
            "diversity": statistics.mean(diversity) if diversity else None,
            "saturation": statistics.mean(r["saturation"] for r in rows),
            "seconds": statistics.median(r["seconds"] for r in rows),
            "unet_evals_per_step": statistics.mean(r["unet_evals_per_step"] for r in rows)}


def label_tile(text: str, size: int = TILE) -> np.ndarray:
    """uint8 [size, size, 3]: `text` in black on white, the row label of the grid."""
    from PIL import Image, ImageDraw

    tile = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(tile).text((4, size // 2 - 6), text, fill="black")
    return np.asarray(tile)


def table_grid(rows: list[tuple[str, list[np.ndarray | None]]]) -> np.ndarray:
    """The grid picture: per variant (name, seed-0 front view per prompt or None) a row, label first,
    a blank cell where a run is missing."""
    blank = np.full((TILE, TILE, 3), 255, dtype=np.uint8)
    tiles = [tile for name, pictures in rows
             for tile in [label_tile(name)] + [blank if p is None else p for p in pictures]]
    return image_grid(np.stack(tiles), columns=len(rows[0][1]) + 1)


def markdown_table(rows: list[dict]) -> str:
    def cell(value):
        return "–" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


KIND_ACC_MARGIN = 0.15  # kind accuracy within 15 points of SDS's: a variant may trade a little accuracy, not most


def bar_verdicts(rows: list[dict], n_prompts: int, margin: float = KIND_ACC_MARGIN) -> dict:
    """The table's bar on the summary rows: kind accuracy within `margin` of SDS's, judged on complete
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


def table_text(summaries: list[dict], reference: float, n_prompts: int) -> str:
    """table.md: the rows, the ground-truth saturation and the bar line."""
    return (markdown_table(summaries) + f"\nGround-truth saturation: {reference:.3f}\n\n"
            + bar_text(bar_verdicts(summaries, n_prompts)))


def ledger_table(ledger: Ledger) -> tuple[str, np.ndarray]:
    """(table.md, grid) of a published table, rendered from its runs.jsonl, features and pictures alone:
    variants and prompts in the order of their first line."""
    by_variant: dict[str, list[dict]] = {}
    for key, line in ledger.runs.items():
        by_variant.setdefault(line["guidance"], []).append(
            {"run": line, "features": ledger.features(key), "picture": ledger.picture(key)})
    prompts = list(dict.fromkeys(line["prompt"] for line in ledger.runs.values() if line["seed"] == 0))
    summaries = [summarise(name, runs) for name, runs in by_variant.items()]
    rows = []
    for name, runs in by_variant.items():
        pictures = {run["run"]["prompt"]: run["picture"] for run in runs if run["run"]["seed"] == 0}
        rows.append((name, [pictures.get(prompt) for prompt in prompts]))
    return table_text(summaries, ground_truth_saturation(prompts), len(prompts)), table_grid(rows)


def main() -> None:
    from sds3d.world.evaluator import Evaluator

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guidance", default=",".join(name for name in GUIDANCE if name not in LIBRARY_GUIDANCE),
                        help="comma-separated variant names (default: all that run without an asset library)")
    parser.add_argument("--limit", type=int, help="first N prompts of the suite")
    parser.add_argument("--kinds", help="comma-separated subset of kinds (default: all 28)")
    parser.add_argument("--diversity-prompts", type=int, default=3, help="first N prompts get --seeds seeds")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--out", default="runs/guidance_table",
                        help="the table being filled: its run lines and run folders (outside git)")
    parser.add_argument("--results", default=str(RESULTS),
                        help="the committed table: its runs are read back, never re-run or changed")
    parser.add_argument("--recorded-only", action="store_true", help="run nothing; summarise the recorded runs")
    parser.add_argument("--publish", action="store_true",
                        help="write the table to --results (only when every run of it is recorded)")
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ledger, results = Ledger(out), Ledger(args.results)
    prior, evaluator = (None, None) if args.recorded_only else (load_prior("embedded"), Evaluator.load())
    summaries, grid_rows, table_runs = [], [], []
    for name in names:
        runs = run_variant(name, prompts, args, prior, evaluator, ledger, results)
        summary = summarise(name, [run for run in runs if run is not None])
        if summary is None:
            continue
        summaries.append(summary)
        table_runs += runs
        seed0 = {run["run"]["prompt"]: run["picture"] for run in runs if run is not None and run["run"]["seed"] == 0}
        grid_rows.append((name, [seed0.get(prompt) for prompt in prompts]))
        print(json.dumps({"summary": summary}), flush=True)
    if not summaries:
        raise SystemExit(f"no recorded runs for {', '.join(names)} in {args.out} or {args.results}")
    grid = table_grid(grid_rows)
    reference = ground_truth_saturation(prompts)
    table = table_text(summaries, reference, len(prompts))
    save_png(grid, out / "grid.png")
    (out / "table.md").write_text(table)
    if args.publish:
        if len(summaries) < len(names) or any(run is None for run in table_runs):
            raise SystemExit(f"not published: runs are missing (table so far in {out / 'table.md'})")
        publish(Path(args.results), table_runs, table, grid)
    print(json.dumps({"rows": summaries, "ground_truth_saturation": reference,
                      "bar": bar_verdicts(summaries, len(prompts))}))


if __name__ == "__main__":
    main()
