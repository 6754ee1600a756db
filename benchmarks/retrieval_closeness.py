"""How close is close? Caption and image scores of micro-world prompts against a variants library.

One prompt per kind ("a <colour> <kind>", colours drawn with seed 0) against a micro-world library
of `--variants` shape variants per kind (`sds3d library make-microworld`, seed 7), each prompt's
prior samples drawn as retrieval draws them (`sds3d.retrieval.retrieve.sample_prior`, 4 + 4
samples, 20 DDIM steps). For each caption threshold it reports, with the kind in the library, how
many prompts keep a candidate and how often the top result after re-ranking is of the prompt's kind
(against the caption ranking alone); with the kind left out (leave-kind-out), how many prompts are
rightly told "nothing close". Rows (one per prompt: the scores against every asset) go to
benchmarks/results/retrieval_closeness/prompts.jsonl; the last line printed is JSON.

    python benchmarks/retrieval_closeness.py [--variants 2] [--limit 28]
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
THRESHOLDS = (0.6, 0.65, 0.7, 0.75)


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
    from sds3d.retrieval.retrieve import DEFAULT_CANDIDATES, sample_prior
    from sds3d.world import COLORS, KINDS, canonical_caption
    from sds3d.world.variants import write_microworld_library

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=2)
    parser.add_argument("--limit", type=int, default=len(KINDS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    folder = Path(tempfile.mkdtemp()) / "library"
    write_microworld_library(folder, args.variants, seed=7, progress=False)
    build_index(folder, progress=False)
    index = LibraryIndex.load(folder)
    text_embedder, image_embedder, prior = TextEmbedder(), ImageEmbedder(), EmbeddedPrior.load()
    asset_kinds = np.array([asset.tags["kind"] for asset in index.assets])
    rng = np.random.default_rng(0)
    rows = []
    for i, kind in enumerate(list(KINDS)[:args.limit]):
        prompt = canonical_caption(kind, list(COLORS)[int(rng.integers(len(COLORS)))])
        samples = sample_prior(prompt, prior, seed=i)
        features = image_embedder.embed(torch.cat([samples.front, samples.any]))
        image = [float((features @ index.image_views[row].T).max(1).values.mean()) for row in range(len(index))]
        text = (index.text @ text_embedder.embed([prompt])[0]).tolist()
        rows.append({"prompt": prompt, "kind": kind, "text": text, "image": image})
        print(json.dumps({"prompt": prompt, "best_same_kind_text": max(t for t, k in zip(text, asset_kinds) if k == kind)}),
              flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "w") as handle:
        for row in rows:
            handle.write(json.dumps({**row, "asset_kinds": asset_kinds.tolist()}) + "\n")
    summary = {"prompts": len(rows), "library_assets": len(index), "seconds": round(time.perf_counter() - start, 1)}
    for threshold in THRESHOLDS:
        kept = text_right = rerank_right = rejected = 0
        for row in rows:
            text, image, same = np.array(row["text"]), np.array(row["image"]), asset_kinds == row["kind"]
            by_text = top_result(text, image, threshold, DEFAULT_CANDIDATES, rerank=False)
            by_image = top_result(text, image, threshold, DEFAULT_CANDIDATES, rerank=True)
            if by_text is not None:
                kept += 1
                text_right += bool(same[by_text])
                rerank_right += bool(same[by_image])
            rejected += top_result(text[~same], image[~same], threshold, DEFAULT_CANDIDATES, rerank=True) is None
        summary[f"{threshold:.2f}"] = {"kind_present_kept": kept, "top1_kind_text_only": text_right,
                                       "top1_kind_reranked": rerank_right, "kind_absent_rejected": rejected}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
