"""The editing benchmark's selection and masked recolour on generated assets (`editing.py --generated DIR`).

DIR holds run folders of micro-world prompts, e.g. `benchmarks/text_to_3d.py --out DIR`. Each asset's
Gaussians take the prompted kind's parts by `generated_parts.transfer_parts`; a feature field is
distilled from the teacher on the asset's own renders, as for the ground-truth objects, and queries
are told the run's prompt as their context (`select_points(..., context=prompt)`), as `sds3d select`
and `sds3d edit` tell them, unless `use_prompt` is False. Each row's `run` names the benchmark's
configuration (`editing.py`: "<teacher>[-context][-grown]"), its `asset` the generated run folder; the
tables are shared by every configuration and resume only the rows of their own `run`.
- generated_selection.jsonl: per asset, part and phrasing ("the <part>", "the <kind>'s <part>"): IoU
  over the Gaussians that are labelled and visible (placed within the tolerance of the mesh's visible
  surface), each weighted by its opacity (generated assets hold many nearly transparent Gaussians that
  no render shows), and unweighted beside it. A part whose true Gaussians carry less than
  `ABSENT_BELOW` times its share of the mesh's surface area is `absent` (the asset lacks it: a
  generated mug without a handle, a few stray Gaussians where the handle would be) and left out of
  the mean.
- generated_recolour.jsonl: "make the <part> <colour>" on each present part of the multi-part kinds,
  measured as on ground truth (`editing.measure_recolour`), the part's pixels being those its
  transferred Gaussians cover.
The picture generated_grid-<run>.png: for the first `MAX_PICTURES` assets of several parts
(columns), its render, the transferred truth of its smallest present part, and the selection of
"the <part>".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from editing import append_row, measure_recolour, read_rows, recolour_cases
from generated_parts import TOLERANCE, generated_runs, part_area_shares, transfer_parts
from selection import iou

ABSENT_BELOW = 0.3
MAX_PICTURES = 8


def weighted_iou(mask: torch.Tensor, truth: torch.Tensor, weight: torch.Tensor) -> float:
    """sum(w [mask & truth]) / sum(w [mask | truth]) over boolean [N] masks, weights [N] >= 0; 1 when both are empty."""
    union = float(weight[mask | truth].sum())
    return float(weight[mask & truth].sum()) / union if union > 0 else 1.0


class GeneratedAssets:
    """The generated assets of a folder, each loaded, part-labelled and distilled once."""

    def __init__(self, folder: str | Path, teacher, config, use_prompt: bool = True, low_threshold: float = 0.5):
        self.runs = generated_runs(folder)
        if not self.runs:
            raise SystemExit(f"editing benchmark: --generated {folder}: no run folders of micro-world prompts there")
        self.teacher, self.config, self.use_prompt, self.cache = teacher, config, use_prompt, {}
        self.low_threshold = low_threshold  # select_points' hysteresis (0.5: no growth)

    def context(self, run: Path) -> str | None:
        """The run's prompt, what `sds3d select` and `sds3d edit` tell the selection (None without `use_prompt`)."""
        from sds3d.features.assets import run_prompt

        return run_prompt(run) if self.use_prompt else None

    def get(self, run: Path, kind: str):
        """-> (gaussians with field, TransferredParts, visible [N] bool, seconds to distil)."""
        import time

        from sds3d.features.distill import distill_features
        from sds3d.features.part_oracle import PartOracle
        from sds3d.generate import load_run

        if run not in self.cache:
            _, gaussians = load_run(run)
            labels = transfer_parts(gaussians, kind)
            visible = PartOracle(kind).visible(labels.placed, tolerance=TOLERANCE)
            start = time.perf_counter()
            distill_features(gaussians, self.teacher, self.config, progress=False)
            self.cache[run] = (gaussians, labels, visible, time.perf_counter() - start)
        return self.cache[run]


def generated_selection_table(assets: GeneratedAssets, path: Path, run: str) -> tuple[list[dict], list[np.ndarray]]:
    """Rows as in the module docstring, and [3, H, W, 3] pictures (render, truth, selection) of some assets."""
    from editing import GRID_SIZE
    from sds3d.errors import InputError
    from sds3d.evaluate import evaluation_cameras
    from sds3d.features.select import mask_of_scores, query_relevancy, render_highlight
    from sds3d.world import KINDS

    rows = read_rows(path, run)
    done = {(r["asset"], r["part"], r["phrasing"]) for r in rows}
    pictures, view = [], evaluation_cameras(resolution=GRID_SIZE)[[1]]
    for asset, kind, colour in assets.runs:
        spec = KINDS[kind]
        gaussians, labels, visible, took = assets.get(asset, kind)
        counted = visible & (labels.parts >= 0)
        weight = gaussians.opacities.detach() * counted
        smallest, expected = None, part_area_shares(kind)
        for index, part in enumerate(spec.parts):
            truth = labels.parts == index
            share = float(weight[truth].sum()) / max(float(weight.sum()), 1e-12)
            absent = bool(share < ABSENT_BELOW * expected[index])
            query = f"the {part}"
            for phrasing, text in (("the <part>", query), ("the <kind>'s <part>", f"the {spec.synonyms[0]}'s {part}")):
                try:
                    score = query_relevancy(gaussians, text, assets.teacher, context=assets.context(asset))
                    mask = mask_of_scores(gaussians, score, 0.5, assets.low_threshold)
                except InputError as error:
                    raise SystemExit(f"editing benchmark: {error}") from None
                if phrasing == "the <part>" and not absent and (smallest is None or share < smallest[0]):
                    smallest = (share, truth, mask)
                if (asset.name, part, phrasing) in done:
                    continue
                row = {"run": run, "asset": asset.name, "kind": kind, "colour": colour, "part": part,
                       "phrasing": phrasing, "query": text, "absent": absent, "part_share": round(share, 4),
                       "mesh_part_share": round(float(expected[index]), 4),
                       "iou": None if absent else round(weighted_iou(mask[counted], truth[counted], weight[counted]), 4),
                       "iou_unweighted": None if absent else round(iou(mask[counted], truth[counted]), 4),
                       "labelled_fraction": round(labels.labelled_fraction, 4), "yaw_degrees": labels.yaw_degrees,
                       "hull_chamfer": round(labels.chamfer, 4), "gaussians": len(gaussians),
                       "distill_seconds": round(took, 2)}
                rows.append(row)
                append_row(path, row)
        if smallest is not None and len(spec.parts) > 1 and len(pictures) < MAX_PICTURES:
            with torch.no_grad():
                render = (gaussians.render(view).rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
                pictures.append(np.concatenate([render, render_highlight(gaussians, smallest[1], view),
                                                render_highlight(gaussians, smallest[2], view)]))
    return rows, pictures


def generated_recolour_table(assets: GeneratedAssets, evaluator, path: Path, run: str,
                             selection_rows: list[dict]) -> list[dict]:
    """One recolour per part that the selection table found present, on each multi-part kind's asset."""
    from sds3d.evaluate import evaluation_cameras

    rows = read_rows(path, run)
    done = {(r["asset"], r["part"]) for r in rows}
    present = {(r["asset"], r["part"]) for r in selection_rows if not r["absent"]}
    cameras = evaluation_cameras()
    for asset, kind, colour in assets.runs:
        for _, index, part, target in recolour_cases(None, ((kind, colour),)):
            if (asset.name, part) in done or (asset.name, part) not in present:
                continue
            gaussians, labels, _, _ = assets.get(asset, kind)
            row, _ = measure_recolour(gaussians, labels.parts, assets.teacher, evaluator, cameras, kind, index,
                                      part, target, context=assets.context(asset),
                                      low_threshold=assets.low_threshold)
            row = {"run": run, "asset": asset.name, **row}
            rows.append(row)
            append_row(path, row)
    return rows
