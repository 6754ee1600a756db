"""Native kernel builds: one folder per install and source version, the first build announced on
stderr, a one-line warning naming the fix when there is no C++ compiler, and kernels that include no
torch headers."""

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from sds3d.cuda import build

load_uncached = build._load_extension.__wrapped__  # load_extension without its per-process cache


def test_no_compiler_is_one_warning_line_naming_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("SDS3D_BUILD_DIR", str(tmp_path / "builds"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_uncached("gaussian_raster") is None
    (warning,) = caught
    message = str(warning.message)
    assert warning.category is RuntimeWarning and "\n" not in message
    assert "no C++ compiler found" in message and "~850x slower" in message and "apt-get install g++" in message
    assert not (tmp_path / "builds").exists() or not any((tmp_path / "builds").iterdir())


def test_build_key_follows_sources_compiler_and_install(monkeypatch, tmp_path):
    sources = [build.CSRC / "gaussian_raster.cpp"]
    key = build.build_key(sources)
    assert key == build.build_key(sources) and len(key) == 16
    monkeypatch.setattr(build, "compiler", lambda: "/opt/other/c++")
    assert build.build_key(sources) != key
    monkeypatch.undo()
    other_install = tmp_path / "csrc"  # the same sources in another install
    shutil.copytree(build.CSRC, other_install)
    monkeypatch.setattr(build, "CSRC", other_install)
    copied = [other_install / "gaussian_raster.cpp"]
    moved = build.build_key(copied)
    assert moved != key
    (other_install / "gaussian_math.h").write_text((other_install / "gaussian_math.h").read_text() + "\n// edit\n")
    assert build.build_key(copied) not in (key, moved)


def test_the_first_build_is_announced_once(monkeypatch, tmp_path, capsys):
    built = []

    def compile_library(source, library):  # stands in for the compiler: writes an empty library
        built.append(library)
        library.write_bytes(b"")
        return library

    monkeypatch.setattr(build, "compile_library", compile_library)
    monkeypatch.setattr(build.ctypes, "CDLL", str)  # "loads" it as its path
    monkeypatch.setattr(build, "compiler", lambda: "/usr/bin/c++")
    monkeypatch.setenv("SDS3D_BUILD_DIR", str(tmp_path))
    key = build.build_key([build.CSRC / "gaussian_raster.cpp"])
    library = tmp_path / f"gaussian_raster-{key}" / f"sds3d_gaussian_raster{build.LIBRARY_SUFFIX}"
    assert load_uncached("gaussian_raster") == str(library)
    first = capsys.readouterr().err
    assert first.startswith("sds3d: compiling the CPU Gaussian rasterizer, once per install (a few seconds)...\n")
    assert "compiled gaussian_raster in" in first and len(first.splitlines()) == 2
    assert load_uncached("gaussian_raster") == str(library)
    assert capsys.readouterr().err == ""  # already built: nothing said
    assert built == [library]


@pytest.mark.skipif(build.compiler() is None, reason="no C++ compiler here")
def test_a_compiler_without_cpp20_builds_with_cpp17(monkeypatch, tmp_path):
    real = build.compiler()
    old_gcc = tmp_path / "old-c++"  # rejects -std=c++20, as gcc 9 does
    old_gcc.write_text(f'#!/bin/sh\ncase " $* " in *" -std=c++20 "*) echo "error: unrecognized option" >&2; exit 1;; esac\n'
                       f'exec {real} "$@"\n')
    old_gcc.chmod(0o755)
    monkeypatch.setenv("CXX", str(old_gcc))
    build.compile_library(build.CSRC / "mesh_raster.cpp", tmp_path / "mesh.so")
    assert (tmp_path / "mesh.so").stat().st_size > 0


@pytest.mark.skipif(build.compiler() is None, reason="no C++ compiler here")
def test_a_compiler_without_openmp_builds_one_thread_kernels_that_match_the_reference(monkeypatch, tmp_path):
    """As Apple clang: -fopenmp is refused. The kernels still build (the `_serial` library, one warning per
    process), and the rasterizer built so matches the PyTorch reference, forward and gradients."""
    import torch

    import sds3d.cuda.gaussian_rasterizer as gr
    from sds3d.cuda._native_gaussians import GaussianKernels
    from test_gaussian_rasterizer import make_scene, render

    real = build.compiler()
    no_openmp = tmp_path / "clang-without-openmp"
    no_openmp.write_text(f'#!/bin/sh\ncase " $* " in *" -fopenmp "*) echo "clang: error: unsupported option '
                         f"'-fopenmp'\" >&2; exit 1;; esac\nexec {real} \"$@\"\n")
    no_openmp.chmod(0o755)
    monkeypatch.setenv("CXX", str(no_openmp))
    monkeypatch.setenv("SDS3D_BUILD_DIR", str(tmp_path / "builds"))
    build._warn_serial_once.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        library = load_uncached("gaussian_raster")
        assert load_uncached("gaussian_raster")._name == library._name  # found, not rebuilt
    assert Path(library._name).name == f"sds3d_gaussian_raster_serial{build.LIBRARY_SUFFIX}"
    (warning,) = caught
    assert "has no OpenMP" in str(warning.message) and "one core" in str(warning.message)
    kernels = GaussianKernels(library)
    assert kernels._max_threads() == 1
    monkeypatch.setattr(gr, "_native", lambda: kernels)
    params, cams = make_scene("random")
    g = torch.Generator().manual_seed(1)
    weights = (torch.randn(3, 32, 32, 4, generator=g), torch.randn(3, 32, 32, 1, generator=g))
    rgb_n, alpha_n, grads_n, _ = render(params, cams, "native", torch.float32, weights)
    rgb_r, alpha_r, grads_r, _ = render(params, cams, "reference", torch.float64, weights)
    assert (rgb_n.double() - rgb_r).abs().max() <= 1e-4 and (alpha_n.double() - alpha_r).abs().max() <= 1e-4
    for name in params:
        assert (grads_n[name].double() - grads_r[name]).norm() <= 1e-3 * grads_r[name].norm(), name


@pytest.mark.skipif(build.compiler() is None, reason="no C++ compiler here")
def test_a_failed_compile_names_the_compilers_error(tmp_path):
    source = tmp_path / "broken.cpp"
    source.write_text("int f() { return undefined_name; }\n")
    with pytest.raises(RuntimeError, match="undefined_name"):
        build.compile_library(source, tmp_path / "broken.so")
    assert not list(tmp_path.glob("*.so")) and not list(tmp_path.glob(".broken*"))  # nothing half-written


@pytest.mark.skipif(build.compiler() is None, reason="no C++ compiler here")
def test_the_kernels_build_and_load_as_plain_shared_libraries():
    """No torch headers (which take 15-40 s to compile): the compiler is given no path to them."""
    import ctypes

    for name in build.KERNELS:
        source = (build.CSRC / f"{name}.cpp").read_text()
        assert "#include <torch" not in source and "#include <ATen" not in source and "pybind" not in source
        assert isinstance(build.load_extension(name), ctypes.CDLL)


def test_a_background_build_is_waited_for_not_repeated(monkeypatch, tmp_path):
    """`generate` starts the build while the prior loads; the first render then waits for it."""
    import threading

    started, release, builds = threading.Event(), threading.Event(), []

    def slow_compile(source, library):
        builds.append(library.name)
        started.set()
        release.wait(10)
        library.write_bytes(b"")
        return library

    monkeypatch.setattr(build, "compile_library", slow_compile)
    monkeypatch.setattr(build.ctypes, "CDLL", lambda path: Path(path).name)
    monkeypatch.setattr(build, "compiler", lambda: "/usr/bin/c++")
    monkeypatch.setenv("SDS3D_BUILD_DIR", str(tmp_path))
    build._load_extension.cache_clear()
    try:
        (thread,) = build.build_in_background(["mesh_raster"])
        assert started.wait(10)
        waiting = threading.Thread(target=lambda: builds.append(build.load_extension("mesh_raster")))
        waiting.start()
        waiting.join(0.2)
        assert waiting.is_alive()  # the caller waits for the build in progress
        release.set()
        thread.join(10), waiting.join(10)
        name = f"sds3d_mesh_raster{build.LIBRARY_SUFFIX}"
        assert builds == [name, name]  # one build, then its library
    finally:
        build._load_extension.cache_clear()


def test_a_process_that_ends_early_lets_its_background_build_finish(tmp_path):
    """So that the next run finds the kernel built."""
    marker = tmp_path / "built"
    script = f"""
import time
from sds3d.cuda import build

def slow_compile(source, library):
    time.sleep(1.0)
    open({str(marker)!r}, "w").close()
    library.write_bytes(b"")

build.compile_library = slow_compile
build.ctypes.CDLL = str
build.compiler = lambda: "/usr/bin/c++"
build.build_in_background(["mesh_raster"])
raise SystemExit(2)  # e.g. the prior failed to load
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "SDS3D_BUILD_DIR": str(tmp_path / "builds")})
    assert result.returncode == 2 and marker.exists(), result.stderr
    assert "finishing the kernel build before exiting" in result.stderr


@pytest.mark.skipif(build.compiler() is None, reason="no C++ compiler here")
def test_native_calls_refuse_tensors_the_c_code_would_misread():
    """The C ABI reads raw memory: a float64, non-contiguous or wrongly shaped tensor is a ValueError."""
    import torch

    from sds3d.cuda.hash_grid import HashGridLayout
    from sds3d.cuda.hash_grid import _native as hash_grid
    from sds3d.cuda.mesh_rasterizer import _native as mesh

    means, quats, scales, opacities = torch.zeros(2, 3), torch.tensor([[1.0, 0, 0, 0]] * 2), torch.ones(2, 3), torch.ones(2)
    viewmats, Ks = torch.eye(4)[None], torch.eye(3)[None]
    with pytest.raises(ValueError, match="float32"):
        build.pointers(means.double())
    with pytest.raises(ValueError, match="contiguous: False"):
        build.pointers(torch.zeros(3, 2).t())
    layout = HashGridLayout.make(levels=2, log2_table_size=6, base_resolution=2, max_resolution=4)
    tables = torch.zeros(layout.num_rows, 2)
    with pytest.raises(ValueError, match="points has the wrong shape"):
        hash_grid().forward(torch.zeros(5, 2), tables, *layout.args)
    with pytest.raises(ValueError, match="offsets must span"):
        hash_grid().forward(torch.zeros(5, 3), tables[:-1].contiguous(), *layout.args)
    with pytest.raises(ValueError, match="faces must be int64"):
        mesh().visibility(torch.zeros(1, 3, 3), torch.zeros(1, 3, dtype=torch.int32), viewmats, Ks, 8, 8, 0.01, True)
    assert len(build.pointers(means, quats, scales, opacities, viewmats, Ks)) == 6  # the well-formed ones pass
