"""When does an IVF index beat exact search for library retrieval? Query time and recall by size.

For libraries of N unit vectors (D = 384, the caption embeddings' width; clustered like real
embeddings: a mixture of N / 100 directions with spread 0.5) it times one query at a time (median), as
retrieval asks, for exact NumPy search, faiss `IndexFlatIP` and faiss `IndexIVFFlat`
(`sds3d.retrieval.search`: about 4 sqrt(N) cells, `ivf_nprobe` of them scanned), on one thread; IVF's
recall@10 is measured against the exact top 10. Two verdicts per size, both at recall@10 >= 0.95:
`ivf_faster_per_query` (the IVF index trained once, when the library is built, and kept: what
`sds3d library build` does from `IVF_MIN_SIZE` captions) and `ivf_wins_amortised` (query time
plus k-means training amortised over 1,000 queries below the flat query time: an IVF index trained
afresh for each process). Rows go to benchmarks/results/retrieval_index/sizes.jsonl; the last line
printed is JSON.

    python benchmarks/retrieval_index.py [--sizes 1000,10000,...] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread, set before numpy loads
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402

from sds3d.hardware import cpu_model  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "retrieval_index" / "sizes.jsonl"
DIM = 384
AMORTISED_QUERIES = 1000
MIN_RECALL = 0.95


def clustered_vectors(n: int, rng: np.random.Generator, spread: float = 0.5) -> np.ndarray:
    centres = rng.standard_normal((max(1, n // 100), DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = centres[rng.integers(len(centres), size=n)] + spread * rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def time_queries(search, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Median seconds of a single query (the machine is shared: the median ignores stalls), and
    the ids [Q, k]."""
    ids, seconds = [], []
    for query in queries:
        start = time.perf_counter()
        ids.append(search.search(query[None], k)[1][0])
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)), np.stack(ids)


def main() -> None:
    import faiss

    from sds3d.retrieval.search import VectorSearch, ivf_cells

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,3000,10000,30000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    cpu = cpu_model()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        vectors = clustered_vectors(n, rng)
        picks = rng.integers(n, size=args.queries)
        queries = vectors[picks] + 0.3 * rng.standard_normal((args.queries, DIM)).astype(np.float32) / np.sqrt(DIM)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        row = {"n": n, "dim": DIM, "k": args.k, "queries": args.queries, "cpu": cpu, "threads": 1}
        numpy_search = VectorSearch(vectors, "numpy")
        row["numpy_query_ms"], exact = time_queries(numpy_search, queries, args.k)
        start = time.perf_counter()
        flat = VectorSearch(vectors, "flat")
        row["flat_build_s"] = time.perf_counter() - start
        row["flat_query_ms"], flat_ids = time_queries(flat, queries, args.k)
        start = time.perf_counter()
        ivf = VectorSearch(vectors, "ivf", seed=args.seed)
        row["ivf_build_s"] = time.perf_counter() - start
        row["ivf_cells"], row["ivf_nprobe"] = ivf_cells(n), ivf.index.nprobe
        row["ivf_query_ms"], ivf_ids = time_queries(ivf, queries, args.k)
        row["flat_agrees_with_numpy"] = float((flat_ids == exact).mean())  # < 1 only by near-ties
        row["ivf_recall_at_k"] = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ivf_ids, exact)]))
        accurate = row["ivf_recall_at_k"] >= MIN_RECALL
        row["ivf_faster_per_query"] = bool(row["ivf_query_ms"] < row["flat_query_ms"] and accurate)
        amortised = row["ivf_query_ms"] + row["ivf_build_s"] / AMORTISED_QUERIES
        row["ivf_wins_amortised"] = bool(amortised < row["flat_query_ms"] and accurate)
        for key in ("numpy_query_ms", "flat_query_ms", "ivf_query_ms"):
            row[key] = round(row[key] * 1000, 4)
        for key in ("flat_build_s", "ivf_build_s"):
            row[key] = round(row[key], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    def first_from(verdict):  # the smallest size from which IVF wins at every measured size
        return next((row["n"] for row in rows if all(r[verdict] for r in rows if r["n"] >= row["n"])), None)

    print(json.dumps({"cpu": cpu, "ivf_faster_per_query_from": first_from("ivf_faster_per_query"),
                      "ivf_wins_amortised_from": first_from("ivf_wins_amortised"), "sizes": [row["n"] for row in rows],
                      "flat_query_ms": [row["flat_query_ms"] for row in rows],
                      "ivf_query_ms": [row["ivf_query_ms"] for row in rows],
                      "numpy_query_ms": [row["numpy_query_ms"] for row in rows],
                      "ivf_build_s": [row["ivf_build_s"] for row in rows],
                      "ivf_recall_at_k": [row["ivf_recall_at_k"] for row in rows]}))


if __name__ == "__main__":
    main()
