"""How close is close? Caption and image scores of micro-world prompts against a variants library.

Two prompts per kind, one canonical ("a <colour> <kind>", colours drawn with seed 0) and one
paraphrase (`sds3d.world.sample_caption`: synonyms and templates, "a 3d render of a teal-colored
android"), against a micro-world library of `--variants` shape variants per kind (`sds3d library
make-microworld`, seed 7), each prompt's prior samples drawn as retrieval draws them
(`sds3d.retrieval.retrieve.sample_prior`, 4 + 4 samples, 20 DDIM steps). For each caption threshold
and phrasing it reports, with the kind in the library, how many prompts keep a candidate and how
often the top result after re-ranking is of the prompt's kind (against the caption ranking
alone); with the kind in the library in other colours only, how many keep one of that kind; with
the kind left out (leave-kind-out), how many prompts are rightly told "nothing close". Rows (one
per prompt: the scores against every asset) go to
benchmarks/results/retrieval_closeness/prompts.jsonl, the verdicts to thresholds.jsonl; the last
line printed is JSON.
`--from-results` recomputes the verdicts from that file (the library is drawn again, without
rendering, for the assets' kinds and colours).

    python benchmarks/retrieval_closeness.py [--variants 2] [--limit 28] [--from-results]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results" / "retrieval_closeness" / "prompts.jsonl"
THRESHOLDS = tuple(round(0.6 + 0.01 * i, 2) for i in range(31))  # 0.60 ... 0.90
PHRASINGS = ("canonical", "paraphrase")


def top_result(text: np.ndarray, image: np.ndarray, threshold: float, candidates: int, rerank: bool):
    """Row of the retrieved asset (None: nothing close), as `retrieve` picks it."""
    order = np.argsort(-text, kind="stable")[:candidates]
    order = order[text[order] >= threshold]
    if len(order) == 0:
        return None
    return int(order[np.argsort(-image[order], kind="stable")[0]]) if rerank else int(order[0])


def main() -> None:
    from sds3d.guidance.priors.embedded_prior import EmbeddedPrior
    from sds3d.retrieval.embedders import ImageEmbedder, TextEmbedder
    from sds3d.retrieval.index import LibraryIndex, build_index
    from sds3d.retrieval.library import read_entries
    from sds3d.retrieval.retrieve import sample_prior
    from sds3d.world import COLORS, KINDS, canonical_caption, sample_caption
    from sds3d.world.variants import write_microworld_library

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=2)
    parser.add_argument("--limit", type=int, default=len(KINDS))
    parser.add_argument("--from-results", action="store_true", help="verdicts from the saved rows, no sampling")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    folder = Path(tempfile.mkdtemp()) / "library"
    write_microworld_library(folder, args.variants, seed=7, progress=False)
    tags = [entry.tags for entry in read_entries(folder)]
    asset_kinds, asset_colors = np.array([t["kind"] for t in tags]), np.array([t["color"] for t in tags])
    if args.from_results:
        rows = [json.loads(line) for line in RESULTS.read_text().splitlines()]
        print(json.dumps(save_verdicts(verdicts(rows, asset_kinds, asset_colors,
                                                {"prompts": len(rows), "library_assets": len(tags)}))))
        return
    build_index(folder, progress=False)
    index = LibraryIndex.load(folder)
    text_embedder, image_embedder, prior = TextEmbedder(), ImageEmbedder(), EmbeddedPrior.load()
    assert [asset.tags for asset in index.assets] == tags
    rng, paraphrase_rng = np.random.default_rng(0), np.random.default_rng(1)
    rows = []
    for i, kind in enumerate(list(KINDS)[:args.limit]):
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        phrasings = {"canonical": canonical_caption(kind, color),
                     "paraphrase": sample_caption(kind, color, None, paraphrase_rng)}
        for phrasing, prompt in phrasings.items():
            samples = sample_prior(prompt, prior, seed=i)
            features = image_embedder.embed(torch.cat([samples.front, samples.any]))
            image = [float((features @ index.image_views[row].T).max(1).values.mean()) for row in range(len(index))]
            text = (index.text @ text_embedder.embed([prompt])[0]).tolist()
            rows.append({"prompt": prompt, "phrasing": phrasing, "kind": kind, "color": color, "text": text,
                         "image": image})
            best = max(t for t, k in zip(text, asset_kinds) if k == kind)
            print(json.dumps({"prompt": prompt, "best_same_kind_text": round(best, 4)}), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "w") as handle:
        for row in rows:
            handle.write(json.dumps({**row, "asset_kinds": asset_kinds.tolist(), "asset_colors": asset_colors.tolist()})
                         + "\n")
    summary = {"prompts": len(rows), "library_assets": len(index), "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(save_verdicts(verdicts(rows, asset_kinds, asset_colors, summary))))


def save_verdicts(summary: dict) -> dict:
    """Writes the verdicts as a table (thresholds.jsonl beside the rows: one row per phrasing and
    threshold); returns `summary`."""
    with open(RESULTS.parent / "thresholds.jsonl", "w") as handle:
        for phrasing in PHRASINGS:
            for key, value in summary.get(phrasing, {}).items():
                if isinstance(value, dict):
                    handle.write(json.dumps({"phrasing": phrasing, "threshold": float(key), **value,
                                             "prompts": summary[phrasing]["prompts"],
                                             "prompts_with_kind_in_other_colour":
                                                 summary[phrasing]["prompts_with_kind_in_other_colour"]}) + "\n")
    return summary


def verdicts(rows: list[dict], asset_kinds: np.ndarray, asset_colors: np.ndarray, summary: dict) -> dict:
    """Per phrasing and caption threshold: prompts keeping a candidate (kind present; kind present
    in other colours only: `kind_other_colour_kept` of `prompts_with_kind_in_other_colour`), top-1
    of the right kind by captions and after re-ranking, and prompts rejected with their kind left
    out. Adds `summary[phrasing][threshold]`."""
    from sds3d.retrieval.retrieve import DEFAULT_CANDIDATES

    for phrasing in PHRASINGS:
        chosen = [row for row in rows if row.get("phrasing", "canonical") == phrasing]
        if not chosen:
            continue
        table = summary[phrasing] = {"prompts": len(chosen)}
        for threshold in THRESHOLDS:
            kept = text_right = rerank_right = rejected = other_colour_kept = other_colour_prompts = 0
            for row in chosen:
                text, image, same = np.array(row["text"]), np.array(row["image"]), asset_kinds == row["kind"]
                by_text = top_result(text, image, threshold, DEFAULT_CANDIDATES, rerank=False)
                by_image = top_result(text, image, threshold, DEFAULT_CANDIDATES, rerank=True)
                if by_text is not None:
                    kept += 1
                    text_right += bool(same[by_text])
                    rerank_right += bool(same[by_image])
                rejected += top_result(text[~same], image[~same], threshold, DEFAULT_CANDIDATES, rerank=True) is None
                other_colour = same & (asset_colors != row["color"])
                if other_colour.any():
                    other_colour_prompts += 1
                    other_colour_kept += bool(text[other_colour].max() >= threshold)
            table[f"{threshold:.2f}"] = {"kind_present_kept": kept, "top1_kind_text_only": text_right,
                                         "top1_kind_reranked": rerank_right,
                                         "kind_other_colour_kept": other_colour_kept,
                                         "kind_absent_rejected": rejected}
        table["prompts_with_kind_in_other_colour"] = other_colour_prompts
    return summary


if __name__ == "__main__":
    main()
