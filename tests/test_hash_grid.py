"""Hash-grid encoding: native C++ kernel vs the PyTorch reference (values, gradients w.r.t. tables
and points, the points-VJP and its backward), float64 gradchecks of the reference, and independent
checks of the indexing, hashing and interpolation."""

import os
import shutil
import subprocess
import sysconfig

import pytest
import torch

import sds3d.cuda.hash_grid as hg
from sds3d.cuda import _torch_hash_grid as ref
from sds3d.cuda.build import CSRC
from sds3d.cuda.hash_grid import HashGridEncoding, HashGridLayout, hash_grid_encode, hash_grid_points_vjp

pytestmark = pytest.mark.usefixtures("one_thread")

# (levels, features, log2 table size, base resolution, max resolution): dense only, mixed
# dense/hashed, the runtime-F path (F = 3), wide features, and the Instant-NGP default.
CONFIGS = [(1, 1, 10, 4, 4), (4, 2, 8, 2, 64), (6, 3, 10, 3, 200), (3, 8, 9, 4, 32), (16, 2, 19, 16, 2048)]


def make_points(layout: HashGridLayout, n: int, seed: int) -> torch.Tensor:
    """[n + extra, 3]: random points, then points on cell boundaries of every level, the domain
    corners and faces, and points outside [0, 1]^3 (clamped by the encoding)."""
    g = torch.Generator().manual_seed(seed)
    points = [torch.rand(n, 3, generator=g)]
    for resolution in layout.resolutions:
        k = torch.randint(0, resolution + 1, (4, 3), generator=g)
        boundary = torch.rand(4, 3, generator=g)
        boundary[:, 0] = k[:, 0] / resolution  # on a cell face in x
        points += [boundary, k / resolution]  # and exactly on grid vertices
    corners = torch.tensor([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=torch.float32)
    faces = torch.rand(6, 3, generator=g)
    faces[torch.arange(6), torch.arange(6) % 3] = (torch.arange(6) >= 3).float()
    outside = torch.rand(4, 3, generator=g) * 1.6 - 0.3
    outside[0] = torch.tensor([-0.2, 0.5, 1.3])
    return torch.cat(points + [corners, faces, outside])


def make_encoding(config, seed: int = 0) -> HashGridEncoding:
    levels, features, log2_size, base, max_res = config
    return HashGridEncoding(levels, features, log2_size, base, max_resolution=max_res, init_scale=1.0,
                            generator=torch.Generator().manual_seed(seed))


def grads(points, tables, layout, backend, weights):
    """Encoding and d(sum(encoding * weights)) / d(points, tables)."""
    p, t = points.clone().requires_grad_(True), tables.detach().clone().requires_grad_(True)
    out = hash_grid_encode(p, t, layout, backend)
    gp, gt = torch.autograd.grad((out * weights).sum(), (p, t))
    return out.detach(), gp, gt


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("n", [1, 300, 5000])
def test_native_matches_reference(config, n):
    enc = make_encoding(config, seed=n)
    points = make_points(enc.layout, n, seed=n)
    weights = torch.randn(points.shape[0], enc.output_dim, generator=torch.Generator().manual_seed(1))
    out_n, gp_n, gt_n = grads(points, enc.tables, enc.layout, "native", weights)
    out_r, gp_r, gt_r = grads(points, enc.tables, enc.layout, "reference", weights)
    torch.testing.assert_close(out_n, out_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gt_n, gt_r, rtol=1e-5, atol=1e-5)
    scale = gp_r.abs().max().item() + 1.0  # point gradients scale with the finest resolution
    torch.testing.assert_close(gp_n, gp_r, rtol=1e-5, atol=1e-5 * scale)
    outside = ((points < 0) | (points > 1))
    assert (gp_n[outside] == 0).all()  # the clamp blocks gradients outside the domain


@pytest.mark.parametrize("config", CONFIGS[1:4])
def test_points_vjp_and_its_backward_match_reference(config):
    enc = make_encoding(config, seed=3)
    points = make_points(enc.layout, 400, seed=3)
    g = torch.Generator().manual_seed(2)
    grad_features = torch.randn(points.shape[0], enc.output_dim, generator=g)
    v = torch.randn(points.shape[0], 3, generator=g)
    results = {}
    for backend in ("native", "reference"):
        gf = grad_features.clone().requires_grad_(True)
        tables = enc.tables.detach().clone().requires_grad_(True)
        vjp = hash_grid_points_vjp(gf, points, tables, enc.layout, backend)
        d_gf, d_tables = torch.autograd.grad((vjp * v).sum(), (gf, tables))
        results[backend] = (vjp.detach(), d_gf, d_tables)
    scale = results["reference"][0].abs().max().item() + 1.0
    for native, reference in zip(results["native"], results["reference"]):
        torch.testing.assert_close(native, reference, rtol=1e-5, atol=1e-5 * scale)


def test_points_vjp_equals_first_order_points_gradient():
    enc = make_encoding(CONFIGS[1])
    points = make_points(enc.layout, 200, seed=5)
    g = torch.randn(points.shape[0], enc.output_dim)
    p = points.clone().requires_grad_(True)
    (direct,) = torch.autograd.grad((enc(p) * g).sum(), p)
    torch.testing.assert_close(enc.points_vjp(g, points), direct, rtol=1e-6, atol=1e-5)


def test_native_has_no_second_derivative_wrt_points():
    enc = make_encoding(CONFIGS[1])
    points = torch.rand(10, 3, requires_grad=True)
    vjp = enc.points_vjp(torch.randn(10, enc.output_dim), points)
    with pytest.raises(RuntimeError, match="second derivatives"):
        vjp.sum().backward()


def test_reference_gradcheck_float64():
    layout = HashGridLayout.make(levels=2, log2_table_size=6, base_resolution=2, max_resolution=8)
    assert layout.hashed == (False, True)
    g = torch.Generator().manual_seed(0)
    tables = torch.randn(layout.num_rows, 2, generator=g, dtype=torch.float64, requires_grad=True)
    # keep the points 1e-3 away from cell faces: the encoding is only piecewise smooth in them
    cells = torch.randint(0, 8, (6, 3), generator=g)
    points = ((cells + 0.01 + 0.98 * torch.rand(6, 3, generator=g)) / 8).double().requires_grad_(True)
    args = layout.args
    assert torch.autograd.gradcheck(lambda p, t: ref.encode(p, t, *args), (points, tables))
    gf = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, p, t: ref.points_vjp(a, p, t, *args), (gf, points, tables))
    assert torch.autograd.gradgradcheck(lambda p, t: ref.encode(p, t, *args), (points, tables))


def test_layout_dense_then_hashed():
    layout = HashGridLayout.make()  # Instant-NGP defaults: 16 levels, 2^19 rows, 16 .. 2048
    assert layout.resolutions[0] == 16 and layout.resolutions[-1] == 2048
    assert all(b > a for a, b in zip(layout.resolutions, layout.resolutions[1:]))
    for resolution, hashed, start, end in zip(layout.resolutions, layout.hashed, layout.offsets, layout.offsets[1:]):
        assert hashed == ((resolution + 1) ** 3 > 2 ** 19)
        assert end - start == (2 ** 19 if hashed else (resolution + 1) ** 3)
    assert layout.hashed.count(False) == 5
    assert HashGridLayout.make(4, 10, 4, per_level_scale=2.0).resolutions == (4, 8, 16, 32)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_vertices_read_their_row(backend):
    """At a grid vertex the encoding is that vertex's row: dense index or spatial hash, computed
    here independently with Python integers (uint32 wrap-around)."""
    layout = HashGridLayout.make(levels=4, log2_table_size=10, base_resolution=4, per_level_scale=2.0)
    assert layout.hashed == (False, False, True, True)
    tables = torch.randn(layout.num_rows, 2, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    for level, resolution in enumerate(layout.resolutions):
        vertices = torch.randint(0, resolution + 1, (50, 3), generator=g)
        out = hash_grid_encode(vertices / resolution, tables, layout, backend)[:, 2 * level: 2 * level + 2]
        rows = []
        for x, y, z in vertices.tolist():
            if layout.hashed[level]:
                row = ((x * 1) ^ ((y * 2654435761) & 0xFFFFFFFF) ^ ((z * 805459861) & 0xFFFFFFFF)) % 2 ** 10
            else:
                row = x + (resolution + 1) * (y + (resolution + 1) * z)
            rows.append(layout.offsets[level] + row)
        assert torch.equal(out, tables[rows])


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_dense_level_reproduces_linear_functions(backend):
    """Trilinear interpolation is exact for affine functions: rows set to a . v / R + b give
    a . x + b everywhere, and the points-VJP returns a."""
    layout = HashGridLayout.make(levels=1, log2_table_size=12, base_resolution=7, max_resolution=7)
    side = 8
    idx = torch.arange(side ** 3)
    vertex = torch.stack([idx % side, (idx // side) % side, idx // side ** 2], dim=-1).float() / 7
    a, b = torch.tensor([0.3, -1.2, 2.0]), 0.25
    tables = (vertex @ a + b)[:, None]
    points = torch.rand(500, 3, generator=torch.Generator().manual_seed(0))
    out = hash_grid_encode(points, tables, layout, backend)
    torch.testing.assert_close(out[:, 0], points @ a + b, rtol=1e-5, atol=1e-5)
    vjp = hash_grid_points_vjp(torch.ones(500, 1), points, tables, layout, backend)
    torch.testing.assert_close(vjp, a.expand(500, 3), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_continuous_across_cell_faces(backend):
    enc = make_encoding((4, 2, 10, 4, 64))
    g = torch.Generator().manual_seed(0)
    for resolution in enc.layout.resolutions:
        on_face = torch.rand(100, 3, generator=g)
        on_face[:, 1] = torch.randint(1, resolution, (100,), generator=g) / resolution
        step = torch.tensor([0.0, 1e-5, 0.0])
        jump = hash_grid_encode(on_face + step, enc.tables, enc.layout, backend) - \
            hash_grid_encode(on_face - step, enc.tables, enc.layout, backend)
        # Lipschitz bound: levels * resolution * |table| * 2 step; a discontinuity would be O(1)
        assert jump.abs().max() < 4 * 64 * 1.0 * 2e-5 * 2


def test_native_backward_is_deterministic_across_thread_counts():
    enc = make_encoding(CONFIGS[4])
    points = torch.rand(20000, 3, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(points.shape[0], enc.output_dim)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        results.append(grads(points, enc.tables, enc.layout, "native", weights))
    torch.set_num_threads(1)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_module_shapes_backends_and_fallback(monkeypatch):
    enc = HashGridEncoding(levels=3, features_per_level=4, log2_table_size=8, base_resolution=2, max_resolution=16)
    assert enc.output_dim == 12 and enc.tables.abs().max() <= 1e-4
    points = torch.rand(2, 5, 3)
    out = enc(points)
    assert out.shape == (2, 5, 12)
    assert hg.resolve_backend("auto", points, enc.tables) == "native"
    assert hg.resolve_backend("auto", points.double(), enc.tables.double()) == "reference"
    with pytest.raises(ValueError, match="float32"):
        hash_grid_encode(points.double(), enc.tables.double(), enc.layout, "native")
    with pytest.raises(ValueError, match="tables must be"):
        hash_grid_encode(points, enc.tables[1:], enc.layout)
    monkeypatch.setattr(hg, "_native", lambda: None)
    assert hg.resolve_backend("native", points, enc.tables) == "reference"
    torch.testing.assert_close(enc(points), out)


def _nvcc_command(output: str, kernels_only: bool) -> list[str]:
    command = ["nvcc", "-c", str(CSRC / "hash_grid.cu"), "-o", output, f"-I{CSRC}", "-std=c++17"]
    if kernels_only:
        return command + ["-DSDS3D_HASH_GRID_KERNELS_ONLY"]
    from torch.utils.cpp_extension import include_paths

    return command + [f"-I{p}" for p in include_paths()] + [f"-I{sysconfig.get_paths()['include']}", "-w",
                                                              "-DTORCH_EXTENSION_NAME=sds3d_hash_grid_cuda"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_kernels_compile(tmp_path):
    result = subprocess.run(_nvcc_command(str(tmp_path / "kernels.o"), kernels_only=True), capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    assert os.path.getsize(tmp_path / "kernels.o") > 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_extension_with_torch_bindings_compiles(tmp_path):
    """The full extension source (kernels + PyTorch bindings); nvcc takes minutes on torch's headers."""
    result = subprocess.run(_nvcc_command(str(tmp_path / "hash_grid.o"), kernels_only=False), capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
