"""Batch generation on Ray: throughput of one worker with 2 threads against two workers with 1 thread
each, and a fault test.

    python benchmarks/batch.py [--prompts 8] [--steps N] [--out runs/batch_bench]

The first N prompts of the micro-world suite (default settings, seed 0), three batches on a local Ray
instance, each in a fresh folder under --out:
    1x2     1 worker x 2 threads
    2x1     2 workers x 1 thread
    fault   2 workers x 1 thread; one worker is killed (SIGKILL) once its run has a checkpoint. Ray
            retries the run, which continues from that checkpoint; every asset.ply must equal, byte
            for byte, that of the undisturbed 2x1 batch (the same threads per run: thread counts
            change results in the last bits).
Assets per hour count the whole batch (Ray start, each worker loading the prior, scoring). Ends with
JSON: {"throughput_ratio": 2x1 over 1x2, "assets_per_hour": {"1x2", "2x1"},
"fault_test": {"killed_workers", "completed", "identical", "resumed_from"}, "seconds": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

from sds3d.batch import read_prompts, run_batch, summary
from sds3d.generate import GenerateConfig
from sds3d.world import COLORS, KINDS, canonical_caption


def suite_prompts(n: int) -> list[str]:
    """The first n prompts of the micro-world suite (kinds in order, colours cycled)."""
    colors = list(COLORS)
    return [canonical_caption(kind, colors[(i * 3) % len(colors)]) for i, kind in enumerate(sorted(KINDS))][:n]


def holder_of(path: Path) -> int | None:
    """The pid of a Ray worker (process title `ray::...`) that has `path` open, else None."""
    target = str(path.resolve())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"):
                continue
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except OSError:  # the process ended, or a descriptor closed, while we looked
            continue
    return None


class WorkerKiller(threading.Thread):
    """Watches a batch folder; the first time a run has a checkpoint and no result yet, SIGKILLs the Ray
    worker writing its metrics.csv. `killed` holds (run name, pid) once it has."""

    def __init__(self, batch_dir: Path, poll: float = 0.05):
        super().__init__(daemon=True)
        self.batch_dir, self.poll, self.killed, self.stop = batch_dir, poll, None, threading.Event()

    def run(self):
        while not self.stop.is_set() and self.killed is None:
            for run in sorted(self.batch_dir.glob("*/checkpoint.pt")):
                if (run.parent / "metrics.json").exists():
                    continue
                pid = holder_of(run.parent / "metrics.csv")
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    self.killed = (run.parent.name, pid)
                    return
            time.sleep(self.poll)


def timed(items, out: Path, workers: int, threads: int) -> tuple[list[dict], float]:
    start = time.perf_counter()
    records = run_batch(items, out, workers, threads, progress=False)
    return records, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, help="steps per run (default: the defaults')")
    parser.add_argument("--out", default="runs/batch_bench")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # inherited by the local Ray workers
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = out / "prompts.txt"
    prompts.write_text("".join(p + "\n" for p in suite_prompts(args.prompts)))
    base = GenerateConfig(steps=args.steps)  # None: the defaults'
    base = replace(base, checkpoint_every=min(50, max(1, base.steps // 4)))

    seconds, per_hour, records = {}, {}, {}
    for name, workers, threads in (("1x2", 1, 2), ("2x1", 2, 1), ("fault", 2, 1)):
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        items = read_prompts(prompts, folder, base)
        killer = WorkerKiller(folder) if name == "fault" else None
        if killer:
            killer.start()
        records[name], seconds[name] = timed(items, folder, workers, threads)
        if killer:
            killer.stop.set()
        print(f"{name}: {json.dumps(summary(records[name], seconds[name]))}", flush=True)
        if name != "fault":
            per_hour[name] = round(len(items) * 3600 / seconds[name], 1)

    def asset_bytes(name: str) -> dict[str, bytes]:
        return {r["run"]: (out / name / r["asset"]).read_bytes() for r in records[name] if r["status"] == "done"}

    killed_run = killer.killed[0] if killer.killed else None
    fault = {"killed_workers": int(killer.killed is not None),
             "completed": all(r["status"] == "done" for r in records["fault"]),
             "identical": len(asset_bytes("fault")) == args.prompts and asset_bytes("fault") == asset_bytes("2x1"),
             "resumed_from": next((r.get("resumed_from") for r in records["fault"] if r["run"] == killed_run), None)}
    print(json.dumps({"throughput_ratio": round(per_hour["2x1"] / per_hour["1x2"], 3), "assets_per_hour": per_hour,
                      "fault_test": fault, "prompts": args.prompts, "steps": args.steps,
                      "seconds": {k: round(v, 1) for k, v in seconds.items()}}))


if __name__ == "__main__":
    main()
