"""Hash-grid encoding speed: native C++ kernel vs the PyTorch reference (and nerfstudio's
PyTorch `HashEncoding` when nerfstudio is importable; it is not a dependency).

Times forward + backward (gradient w.r.t. the tables) of the Instant-NGP default encoding (16 levels,
2 features, 2^19 rows per level, resolutions 16 .. 2048) at the points a NeRF step would query:
64 x 64 rays from an orbit camera x 64 stratified samples inside the [-1, 1]^3 box = 262,144 points,
with 2 threads. Prints a table, then (last line) JSON with `points`, `native_ms`, `reference_ms`,
`speedup` (and `nerfstudio_ms` when it ran).

`--nerf` also times one training step of the default hash-grid NeRF at 32x32 with 4 random views
(render, backward of rgb.mean() + the regularisers, Adam, after_step; median after 2 warm-up steps)
and adds `nerf` to the JSON: `render_ms`, `backward_ms`, `optimizer_ms`, `samples` (evaluated per step).

    python benchmarks/hashgrid.py [--rays 64] [--samples 64] [--repeats 5] [--reference-repeats 2] [--nerf]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

from sds3d.cameras import orbit_cameras  # noqa: E402
from sds3d.cuda.hash_grid import HashGridEncoding, hash_grid_encode  # noqa: E402


def ray_points(rays: int, samples: int, seed: int = 0) -> torch.Tensor:
    """[rays^2 * samples, 3] in [0, 1]^3: stratified samples along the camera rays inside the box."""
    g = torch.Generator().manual_seed(seed)
    cams = orbit_cameras(20.0, 30.0, 2.5, 40.0, rays)
    ys, xs = torch.meshgrid(torch.arange(rays) + 0.5, torch.arange(rays) + 0.5, indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(-1, 3)
    directions = pixels @ torch.linalg.inv(cams.Ks[0]).T @ cams.camtoworlds[0, :3, :3].T
    directions = torch.nn.functional.normalize(directions, dim=-1)
    origin = cams.centers[0]
    # slab test against [-1, 1]^3 (every ray of this camera hits the box)
    t0, t1 = (-1 - origin) / directions, (1 - origin) / directions
    near, far = torch.minimum(t0, t1).amax(-1), torch.maximum(t0, t1).amin(-1)
    u = (torch.arange(samples) + torch.rand(rays * rays, samples, generator=g)) / samples
    t = near[:, None] + (far - near)[:, None] * u
    points = origin + directions[:, None, :] * t[..., None]
    return ((points + 1) / 2).clamp(0, 1).reshape(-1, 3)


def time_step(step, repeats: int) -> float:
    """Median milliseconds of `step()` (forward + backward)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def ours(points: torch.Tensor, encoding: HashGridEncoding, grad: torch.Tensor, backend: str):
    def step():
        encoding.tables.grad = None
        hash_grid_encode(points, encoding.tables, encoding.layout, backend).backward(grad)
    return step


def nerfstudio_step(points: torch.Tensor, grad: torch.Tensor):
    """nerfstudio's PyTorch HashEncoding with the same settings, or None when not importable."""
    try:
        from nerfstudio.field_components.encodings import HashEncoding
    except ImportError:
        return None
    encoding = HashEncoding(num_levels=16, min_res=16, max_res=2048, log2_hashmap_size=19, features_per_level=2,
                            implementation="torch")

    def step():
        encoding.zero_grad(set_to_none=True)
        encoding(points).backward(grad)
    return step


def nerf_step(steps: int = 12) -> dict:
    """Median ms of the phases of a NeRF training step (32x32, 4 views, default NeRFConfig)."""
    from sds3d.cameras import CameraSampler
    from sds3d.representations.nerf import NeRF, NeRFConfig

    torch.manual_seed(0)
    nerf = NeRF(NeRFConfig(), torch.Generator().manual_seed(0))
    optimizers = nerf.make_optimizers()
    sampler, g = CameraSampler(width=32, height=32), torch.Generator().manual_seed(0)
    rows = []
    for step in range(steps + 2):
        cameras = sampler.sample(4, g)
        start = time.perf_counter()
        out = nerf.render(cameras)
        rendered = time.perf_counter()
        for optimizer in optimizers.values():
            optimizer.zero_grad()
        (out.rgb.mean() + out.meta["regularizer_loss"]).backward()
        backward = time.perf_counter()
        for optimizer in optimizers.values():
            optimizer.step()
        nerf.after_step(step, out, optimizers)
        if step >= 2:
            done = time.perf_counter()
            rows.append(((rendered - start) * 1000, (backward - rendered) * 1000, (done - backward) * 1000,
                         out.meta["samples"]))
    median = [round(statistics.median(column), 1) for column in zip(*rows)]
    return dict(zip(("render_ms", "backward_ms", "optimizer_ms", "samples"), median))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rays", type=int, default=64, help="rays per image side")
    parser.add_argument("--samples", type=int, default=64, help="samples per ray")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference-repeats", type=int, default=2)
    parser.add_argument("--nerf", action="store_true", help="also time a NeRF training step (32x32, 4 views)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    points = ray_points(args.rays, args.samples)
    encoding = HashGridEncoding(generator=torch.Generator().manual_seed(0))
    grad = torch.randn(points.shape[0], encoding.output_dim, generator=torch.Generator().manual_seed(1))
    native = ours(points, encoding, grad, "native")
    native()  # warm-up (and first-use build)
    native_ms = time_step(native, args.repeats)
    reference_ms = time_step(ours(points, encoding, grad, "reference"), args.reference_repeats)
    row = {"points": points.shape[0], "native_ms": round(native_ms, 1), "reference_ms": round(reference_ms, 1),
           "speedup": round(reference_ms / native_ms, 1)}
    peer = nerfstudio_step(points, grad)
    if peer is not None:
        peer()
        row["nerfstudio_ms"] = round(time_step(peer, args.reference_repeats), 1)
    print(f"{'points':>8} {'native ms':>10} {'reference ms':>13} {'speedup':>8}"
          + (f" {'nerfstudio ms':>14}" if peer is not None else ""))
    print(f"{row['points']:>8} {native_ms:>10.1f} {reference_ms:>13.1f} {row['speedup']:>8.1f}"
          + (f" {row['nerfstudio_ms']:>14.1f}" if peer is not None else ""))
    if args.nerf:
        row["nerf"] = nerf_step()
        print("NeRF step, 32x32, 4 views:", ", ".join(f"{k} {v}" for k, v in row["nerf"].items()))
    print(json.dumps(row))


if __name__ == "__main__":
    main()
