"""A no-grad UNet call on slices of its batch, in parallel threads of one core each.

The embedded prior's UNet runs 8 images of 32x32 per call (4 views, conditional and unconditional).
Its kernels are too small for torch's intra-op threads to share well: on a 2-core AMD EPYC (AVX2), one
call took 208 ms on 1 thread and 207 ms on 2, but 144 ms as two threads of one core each running half
the batch (`benchmarks/step_profile.py` measures it on a machine). The images of a batch do not
interact (group norm and attention are per image), so the halves give the whole batch's output.

Each worker sets what torch keeps per thread: its intra-op thread count (OpenMP's is per thread, set
once when the worker starts) and no-grad mode; `forward` enters any autocast itself. Workers live in
one pool per process, reused by every call. A hook that adds per-image values inside the UNet (VSD's
LoRA camera embedding) takes its rows with `current_slice()`, the slice the calling thread computes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()
_local = threading.local()


def current_slice() -> slice:
    """The slice of the batch that this thread's part of `run_in_slices` computes; the whole batch
    (slice(None)) outside one."""
    return getattr(_local, "part", slice(None))


def batch_chunks(batch: int, threads: int | None = None) -> int:
    """How many slices a no-grad call of `batch` images runs as: one per intra-op thread of the
    caller (`torch.get_num_threads()` unless given), at most one per image; 1 = no split."""
    threads = torch.get_num_threads() if threads is None else threads
    return max(1, min(int(threads), int(batch)))


def _one_core() -> None:
    """A worker's start: torch's per-thread set-up first (which would later reset the count), then one thread."""
    torch.get_num_threads()
    torch.set_num_threads(1)


def _executor(workers: int) -> ThreadPoolExecutor:
    """A pool of exactly `workers` live threads of one intra-op thread each. torch.set_num_threads
    also sets the count that threads started later begin with, so the caller sets its own count
    again once every worker has set its (web UI jobs start on fresh threads)."""
    global _pool, _pool_workers
    with _pool_lock:
        if _pool_workers < workers:
            threads = torch.get_num_threads()
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sds3d-batch",
                                                      initializer=_one_core), workers
            all_started = threading.Barrier(workers)  # each task waits for the others: `workers` threads
            for future in [_pool.submit(all_started.wait) for _ in range(workers)]:
                future.result()
            torch.set_num_threads(threads)
        return _pool


def run_in_slices(forward: Callable[[slice], torch.Tensor], batch: int, chunks: int) -> torch.Tensor:
    """torch.cat of forward(s) over `chunks` contiguous slices s of range(batch) (sizes differing by at
    most one), each run under no-grad in its own worker thread on one core. chunks <= 1 calls
    forward(slice(0, batch)) in the caller's thread."""
    if chunks <= 1:
        return forward(slice(0, batch))
    bounds = [batch * i // chunks for i in range(chunks + 1)]

    def work(part: slice) -> torch.Tensor:
        _local.part = part
        try:
            with torch.no_grad():
                return forward(part)
        finally:
            del _local.part

    pool = _executor(chunks)
    return torch.cat([future.result() for future in [pool.submit(work, slice(a, b)) for a, b in zip(bounds, bounds[1:])]])
