"""Maximum inner product search over unit vectors (cosine similarity): faiss when installed, NumPy else.

Methods: "flat" (faiss `IndexFlatIP`, exact), "ivf" (faiss `IndexIVFFlat`: k-means cells, only the
`nprobe` nearest cells are scanned; approximate), "numpy" (exact, a matrix product and a partial
sort). "auto" picks flat below `IVF_MIN_SIZE` vectors and IVF from there on when faiss is
installed, NumPy otherwise. faiss is the optional extra `retrieval` (`pip install faiss-cpu`).

`IVF_MIN_SIZE` from `benchmarks/retrieval_index.py` (one thread of a shared AMD EPYC, results in
benchmarks/results/retrieval_index/): a trained IVF index answers faster than the flat one at every
size measured (1,000-100,000 vectors of 384, recall@10 = 1.0), but below 30,000 both take well
under 2 ms (flat 0.25 ms at 10,000, against seconds for the rest of retrieval), while training
costs 18 s at 30,000 and 139 s at 100,000 (where flat takes 91 ms a query). Trained afresh per
process it rarely paid off within 1,000 queries, so a library index trains it once, at build time,
from 30,000 captions (`index.build_index`), where the flat scan starts to cost milliseconds and the
training is small beside rendering that many assets.
"""

from __future__ import annotations

import math

import numpy as np

METHODS = ("auto", "flat", "ivf", "numpy")
IVF_MIN_SIZE = 30_000


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def ivf_cells(n: int) -> int:
    """Number of IVF cells for n vectors: about 4 sqrt(n), with at least 39 vectors per cell to train on."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def ivf_nprobe(cells: int) -> int:
    """Cells scanned per query: an eighth of them, at least 8 (recall@10 >= 0.95 on clustered data)."""
    return min(cells, max(8, cells // 8))


class VectorSearch:
    """Top-k rows of `vectors` [N, D] (unit rows, float32) by inner product with each query."""

    def __init__(self, vectors, method: str = "auto", nprobe: int | None = None, seed: int = 0):
        if method not in METHODS:
            raise ValueError(f"unknown search method {method!r}; choose one of {', '.join(METHODS)}")
        self.vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if self.vectors.ndim != 2:
            raise ValueError(f"vectors must be [N, D], got shape {self.vectors.shape}")
        n, dim = self.vectors.shape
        if method == "auto":
            method = "numpy" if not faiss_available() else ("ivf" if n >= IVF_MIN_SIZE else "flat")
        if method in ("flat", "ivf") and not faiss_available():
            raise ImportError(f"search method {method!r} needs faiss: pip install faiss-cpu (or method='numpy')")
        self.method = method
        self.index = None
        if method == "flat":
            import faiss

            self.index = faiss.IndexFlatIP(dim)
            self.index.add(self.vectors)
        elif method == "ivf":
            import faiss

            cells = ivf_cells(n)
            quantizer = faiss.IndexFlatIP(dim)
            self.index = faiss.IndexIVFFlat(quantizer, dim, cells, faiss.METRIC_INNER_PRODUCT)
            self.index.cp.seed = seed
            self.index.train(self.vectors)
            self.index.add(self.vectors)
            self.index.nprobe = nprobe or ivf_nprobe(cells)
            self._quantizer = quantizer  # faiss does not own it: keep it alive

    @classmethod
    def from_faiss(cls, vectors, index, method: str = "ivf") -> "VectorSearch":
        """A search over a faiss index trained and filled before (e.g. read from disk) on `vectors`."""
        search = cls.__new__(cls)
        search.vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if index.ntotal != len(search.vectors) or index.d != search.vectors.shape[1]:
            raise ValueError(f"the faiss index holds {index.ntotal} x {index.d}, not {search.vectors.shape}")
        search.method, search.index = method, index
        return search

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries [Q, D] (or [D]) -> (scores [Q, k'], ids [Q, k']) with k' = min(k, N), best first.
        Exact methods order equal scores by row."""
        queries = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(-1, self.vectors.shape[1]))
        k = min(int(k), len(self))
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.index is not None:
            scores, ids = self.index.search(queries, k)
            return scores, ids.astype(np.int64)
        scores = queries @ self.vectors.T  # [Q, N]
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < len(self) else np.tile(np.arange(len(self)), (len(queries), 1))
        ids = np.empty_like(part)
        for row in range(len(queries)):
            candidates = np.sort(part[row])  # by row, so the stable sort keeps ties in row order
            ids[row] = candidates[np.argsort(-scores[row, candidates], kind="stable")]
        return np.take_along_axis(scores, ids, 1), ids.astype(np.int64)


__all__ = ["METHODS", "IVF_MIN_SIZE", "faiss_available", "ivf_cells", "ivf_nprobe", "VectorSearch"]
