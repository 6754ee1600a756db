"""Gaussian rasterizer speed: native C++ tile kernel vs the dense PyTorch reference.

Times forward + backward of a weighted sum of the render for N Gaussians at R x R, 4 views, with
2 threads. Prints a table, then (last line) JSON rows with `gaussians`, `resolution`, `views`,
`native_ms`, `reference_ms`, `speedup`. gsplat, the peer, has no CPU path (its PyTorch twin calls
CUDA for tile rasterization), so it cannot be timed here.

    python benchmarks/rasterizer.py [--sizes 1000 5000 20000] [--resolutions 64 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

from sds3d.cameras import CameraSampler  # noqa: E402
from sds3d.cuda.gaussian_rasterizer import rasterize_gaussians  # noqa: E402
from sds3d.representations import Gaussians, GaussiansConfig  # noqa: E402


def scene(n: int, seed: int = 0):
    """A typical score-distillation start: Gaussians filling a ball of radius 0.5."""
    g = torch.Generator().manual_seed(seed)
    gaussians = Gaussians.random_in_sphere(GaussiansConfig(num_points=n, init_opacity=0.5), g)
    with torch.no_grad():
        gaussians.params["quats"].copy_(torch.randn(n, 4, generator=g))
    return {"means": gaussians.means.detach(), "quats": gaussians.quats.detach(), "scales": gaussians.scales.detach(),
            "opacities": gaussians.opacities.detach(), "colors": torch.rand(n, 3, generator=g)}


def time_step(params, cams, backend: str, repeats: int) -> float:
    """Median milliseconds of one forward + backward."""
    times = []
    for _ in range(repeats):
        p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        start = time.perf_counter()
        rgb, alpha, _ = rasterize_gaussians(p["means"], p["quats"], p["scales"], p["opacities"], p["colors"],
                                            cams.viewmats, cams.Ks, cams.width, cams.height, backend=backend)
        (rgb.sum() + alpha.sum()).backward()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference-repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    print(f"{'gaussians':>9} {'res':>4} {'views':>5} {'native ms':>10} {'reference ms':>13} {'speedup':>8}")
    for n in args.sizes:
        params = scene(n)
        for res in args.resolutions:
            cams = CameraSampler(width=res, height=res).sample(args.views, torch.Generator().manual_seed(1))
            time_step(params, cams, "native", 1)  # warm-up (and first-use build)
            native = time_step(params, cams, "native", args.repeats)
            reference = time_step(params, cams, "reference", args.reference_repeats)
            row = {"gaussians": n, "resolution": res, "views": args.views, "native_ms": round(native, 2),
                   "reference_ms": round(reference, 1), "speedup": round(reference / native, 1)}
            rows.append(row)
            print(f"{n:>9} {res:>4} {args.views:>5} {native:>10.1f} {reference:>13.1f} {row['speedup']:>8.1f}",
                  flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
