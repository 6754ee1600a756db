"""How faithfully a textured GLB export renders like the representation it came from.

For each micro-world kind and meshing method (marching-cubes, poisson, tsdf): the ground-truth mesh
-> 20k surface Gaussians (`mesh_to_gaussians`) -> `export_textured(..., texture_size=256,
resolution=128, max_faces=4000, method=...)` -> the GLB re-imported
with trimesh and rendered unlit. PSNR against the Gaussians over 8 turntable views (elevation 20)
at 64x64, the Gaussians rendered three ways: classic 3DGS splatting (eps2d 0.3), the antialiased
mode (Mip-Splatting, eps2d 0.1), and both sides 4x supersampled (256x256 box-filtered to 64x64;
Gaussians antialiased).
Also whether the exported surface is closed (`boundary_edges`: edges with one face) and the seconds
the export took. Prints a table, then (last line) JSON: one row per kind and method with
`classic_db`, `antialiased_db`, `supersampled_db`, `boundary_edges`, `seconds`.

    python benchmarks/export_fidelity.py [--kinds mug,car,house,chair] [--methods marching-cubes,poisson,tsdf]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import trimesh

from sds3d.cameras import turntable_cameras
from sds3d.export import export_textured
from sds3d.representations.convert import mesh_to_gaussians
from sds3d.representations.mesh import Mesh, MeshConfig
from sds3d.world import make_object


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return (-10 * torch.log10(((a - b) ** 2).mean())).item()


@torch.no_grad()
def render(representation, supersample: int = 1) -> torch.Tensor:
    """[8, 64, 64, 3]: turntable views, box-filtered down from `supersample` x 64 pixels."""
    rgb = representation.render(turntable_cameras(8, elevation=20.0, width=64 * supersample)).rgb
    return F.avg_pool2d(rgb.permute(0, 3, 1, 2), supersample).permute(0, 2, 3, 1)


def measure(kind: str, method: str, folder: Path) -> dict:
    mesh = Mesh.from_trimesh(make_object(kind, "red").mesh)
    gaussians = mesh_to_gaussians(mesh, 20000, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    path = export_textured(gaussians, folder / f"{kind}.glb", texture_size=256, resolution=128, max_faces=4000,
                           method=method)
    seconds = time.perf_counter() - start
    back = Mesh.load(path, MeshConfig(ambient=1.0, diffuse=0.0))  # Gaussians are unlit
    welded = trimesh.Trimesh(back.positions.detach().numpy(), back.vertex_to_position[back.faces].numpy())
    row = {"kind": kind, "method": method, "faces": len(back.faces),
           "boundary_edges": len(trimesh.grouping.group_rows(welded.edges_sorted, require_count=1)),
           "seconds": round(seconds, 1), "classic_db": psnr(render(back), render(gaussians))}
    gaussians.config.rasterize_mode, gaussians.config.eps2d = "antialiased", 0.1
    row["antialiased_db"] = psnr(render(back), render(gaussians))
    row["supersampled_db"] = psnr(render(back, 4), render(gaussians, 4))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="mug,car,house,chair")
    parser.add_argument("--methods", default="marching-cubes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure(kind, method, Path(folder)) for method in args.methods.split(",")
                for kind in args.kinds.split(",")]
    print(f"{'kind':8} {'method':15} {'faces':>6} {'open edges':>10} {'seconds':>8} {'classic dB':>11} "
          f"{'antialiased dB':>15} {'4x supersampled dB':>19}")
    for r in rows:
        print(f"{r['kind']:8} {r['method']:15} {r['faces']:>6} {r['boundary_edges']:>10} {r['seconds']:>8.1f} "
              f"{r['classic_db']:>11.1f} {r['antialiased_db']:>15.1f} {r['supersampled_db']:>19.1f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
