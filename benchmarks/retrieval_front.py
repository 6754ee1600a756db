"""Front alignment of retrieved assets: how far off is the yaw retrieval finds?

A library of `--variants` shape variants of each micro-world kind with a front (seed 3), each
stored turned about +z by a random multiple of 30 degrees (so the indexed views include the front),
is indexed; for every asset the yaw of `sds3d.retrieval.retrieve.front_azimuth` (the evaluator's
view head over the indexed views) is compared with the turn that undoes the stored one. Rows go to
benchmarks/results/retrieval_front/assets.jsonl; the last line printed is JSON (mean error in
degrees, and how many assets are exact or within one 30-degree view step).

    python benchmarks/retrieval_front.py [--variants 3]
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

RESULTS = Path(__file__).parent / "results" / "retrieval_front" / "assets.jsonl"


def main() -> None:
    from sds3d.export import save_trimesh
    from sds3d.retrieval.index import LibraryIndex, build_index
    from sds3d.retrieval.retrieve import front_azimuth
    from sds3d.world import fronted_kinds
    from sds3d.world.variants import make_variant

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    folder = Path(tempfile.mkdtemp()) / "library"
    folder.mkdir(parents=True)
    lines, turns = [], {}
    for kind in fronted_kinds():
        for i in range(args.variants):
            variant = make_variant(kind, "red", seed=args.seed * 1000 + i)
            turn = float(30 * rng.integers(12))
            mesh = variant.mesh.copy()
            c, s = np.cos(np.radians(turn)), np.sin(np.radians(turn))
            mesh.vertices = np.asarray(mesh.vertices) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T
            file = f"{kind}_{i}.glb"
            save_trimesh(mesh, folder / file)
            turns[file] = turn
            lines.append(json.dumps({"file": file, "caption": f"a red {kind}"}))
    (folder / "library.jsonl").write_text("\n".join(lines) + "\n")
    build_index(folder, progress=False)
    index = LibraryIndex.load(folder)
    rows = []
    for row, asset in enumerate(index.assets):
        yaw = -front_azimuth(index.front_probability[row], index.azimuths)
        error = abs((yaw + turns[asset.file] + 180.0) % 360.0 - 180.0)  # yaw should be -turn
        rows.append({"file": asset.file, "stored_turn": turns[asset.file], "yaw": yaw, "error_degrees": error})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    errors = np.array([row["error_degrees"] for row in rows])
    print(json.dumps({"assets": len(rows), "mean_error_degrees": round(float(errors.mean()), 1),
                      "exact": int((errors < 1).sum()), "within_30": int((errors <= 30).sum()),
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
