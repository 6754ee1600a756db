"""How far the classifier-free shape score can be trusted, and shape scores of finished runs.

    python benchmarks/shape_accuracy.py [--points 20000] [--seed 0]     # calibration on ground truth
    python benchmarks/shape_accuracy.py --runs runs/bench [--grid shape.png]  # rescore a suite's runs

Calibration: every micro-world kind's ground-truth mesh, turned by a random yaw and scaled by a random
factor in [0.7, 1.3], becomes surface Gaussians (`mesh_to_gaussians`) and is scored by
`sds3d.shape_accuracy` against all 28 kinds. It measures the score's ceiling: the shape is right,
so every miss is the score's own. `--runs DIR` scores each run folder under DIR whose prompt names a
micro-world object, without re-running anything; `--grid` draws, per asset, its view from azimuth 30
beside the ground truth of the prompted kind and of the nearest kind. Prints one JSON line per asset,
then JSON last:
{"shape_acc", "assets", "rows": [{kind, shape_acc, shape_rank, shape_margin, shape_nearest}, ...]}.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np
import torch


def calibration_assets(points: int, seed: int):
    """(kind, Gaussians) of every kind's ground truth, randomly yawed and rescaled."""
    import trimesh

    from sds3d.representations.convert import mesh_to_gaussians
    from sds3d.world import COLORS, KINDS, make_object

    rng = np.random.default_rng(seed)
    colors = list(COLORS)
    for i, kind in enumerate(KINDS):
        mesh = make_object(kind, colors[i % len(colors)]).mesh.copy()
        mesh.apply_transform(trimesh.transformations.rotation_matrix(math.radians(rng.uniform(0, 360)), [0, 0, 1]))
        mesh.apply_scale(rng.uniform(0.7, 1.3))
        yield kind, mesh_to_gaussians(mesh, points, generator=torch.Generator().manual_seed(seed + i))


def run_assets(directory: Path):
    """(kind, representation) of every finished run under `directory` with a micro-world prompt."""
    from sds3d.generate import load_run
    from sds3d.world import parse_prompt

    for run in sorted(p.parent for p in directory.glob("*/checkpoint.pt")):
        config, representation = load_run(run)
        parsed = parse_prompt(config.prompt)
        if parsed is not None:
            yield parsed[0], representation


def comparison_row(representation, kind: str, nearest: str) -> np.ndarray:
    """uint8 [64, 192, 3]: the asset, the prompted kind's and the nearest kind's ground truth, each
    seen from elevation 20, azimuth 30 (the ground truth in the world's first colour)."""
    from sds3d.cameras import orbit_cameras
    from sds3d.cuda.mesh_rasterizer import render_trimesh
    from sds3d.world import COLORS, make_object

    camera = orbit_cameras(20.0, 30.0, 2.5, 40.0, 64)
    with torch.no_grad():
        views = [representation.render(camera).rgb[0]]
        views += [render_trimesh(make_object(k, next(iter(COLORS))).mesh, camera).rgb[0] for k in (kind, nearest)]
    return (torch.cat(views, dim=1).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)


def main() -> None:
    from sds3d.shape_accuracy import shape_points, shape_scores

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, help="score the run folders under this directory instead")
    parser.add_argument("--points", type=int, default=20000, help="Gaussians per calibration asset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--grid", type=Path, help="with --runs: a PNG of asset | prompted kind | nearest kind")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    assets = run_assets(args.runs) if args.runs else calibration_assets(args.points, args.seed)
    rows, pictures = [], []
    for kind, representation in assets:
        row = {"kind": kind, **shape_scores(shape_points(representation), kind)}
        rows.append(row)
        if args.grid:
            pictures.append(comparison_row(representation, kind, row["shape_nearest"]))
        print(json.dumps(row), flush=True)
    if not rows:
        raise SystemExit(f"no finished micro-world runs under {args.runs}")
    if pictures:
        from sds3d.turntable import image_grid, save_png

        save_png(image_grid(np.stack(pictures), columns=4), args.grid)
    print(json.dumps({"shape_acc": statistics.mean(r["shape_acc"] for r in rows), "assets": len(rows), "rows": rows}))


if __name__ == "__main__":
    main()
