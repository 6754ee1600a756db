"""Mesh visibility pass: native C++ kernel vs the dense PyTorch reference, measured in one run.

Icospheres (1280 and 5120 faces) seen by 4 orbit cameras at 64x64 and 128x128, 2 threads. Times
are the best of repeated calls after a warm-up (the first call also builds the kernel): on a shared
machine a 2-thread OpenMP region often waits for a descheduled thread, which the minimum filters
out. Both backends must return identical face ids. The last line printed is a JSON list of rows
{faces, resolution, views, native_ms, reference_ms, speedup}.

    python benchmarks/mesh_rasterizer.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import trimesh

from sds3d.cameras import orbit_cameras
from sds3d.cuda.mesh_rasterizer import visibility


def best_ms(fn, budget_s: float = 2.0, max_repeats: int = 1000) -> float:
    """Fastest wall time of `fn()` in ms over repeats that fit in about `budget_s` (at least 1)."""
    times = []
    while len(times) < max_repeats and (not times or sum(times) < budget_s):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch and OpenMP threads")
    torch.set_num_threads(parser.parse_args().threads)
    rows = []
    for subdivisions in (3, 4):
        sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
        vertices = torch.tensor(sphere.vertices, dtype=torch.float32)
        faces = torch.tensor(sphere.faces)
        for resolution in (64, 128):
            cameras = orbit_cameras([10.0, 30.0, -5.0, 60.0], [0.0, 90.0, 180.0, -45.0], 2.8, 40.0, resolution)
            native = visibility(vertices, faces, cameras, backend="native")  # warm-up (and build)
            reference = visibility(vertices, faces, cameras, backend="reference")
            if not torch.equal(native[0], reference[0]):
                raise AssertionError("native and reference face ids differ")
            native_ms = best_ms(lambda: visibility(vertices, faces, cameras, backend="native"))
            reference_ms = best_ms(lambda: visibility(vertices, faces, cameras, backend="reference"))
            row = {"faces": len(faces), "resolution": resolution, "views": len(cameras),
                   "native_ms": round(native_ms, 3), "reference_ms": round(reference_ms, 1),
                   "speedup": round(reference_ms / native_ms, 1)}
            print(f"{row['faces']:5d} faces {resolution:3d}^2 x {len(cameras)} views: native {native_ms:8.3f} ms, "
                  f"reference {reference_ms:8.1f} ms, speedup {row['speedup']}x", flush=True)
            rows.append(row)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
