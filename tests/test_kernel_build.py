"""Native kernel builds: one folder per install and source version, the first build announced on
stderr, and a one-line warning naming the fix when there is no C++ compiler."""

import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

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


def test_build_key_follows_sources_torch_and_install(monkeypatch, tmp_path):
    sources = [build.CSRC / "gaussian_raster.cpp"]
    key = build.build_key(sources)
    assert key == build.build_key(sources) and len(key) == 16
    monkeypatch.setattr(torch, "__version__", torch.__version__ + "+other")
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
    import torch.utils.cpp_extension as cpp_extension

    built = []

    def fake_load(name, build_directory, **kwargs):  # stands in for the compiler: writes the library
        built.append(build_directory)
        (tmp_path / build_directory / f"{name}{cpp_extension.LIB_EXT}").write_bytes(b"")
        return name

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    monkeypatch.setenv("SDS3D_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(build, "compiler", lambda: "/usr/bin/c++")
    assert load_uncached("gaussian_raster") == "sds3d_gaussian_raster"
    first = capsys.readouterr().err
    assert first.startswith("sds3d: compiling the CPU Gaussian rasterizer, once per install (~20 s)...\n")
    assert "compiled gaussian_raster in" in first and len(first.splitlines()) == 2
    assert load_uncached("gaussian_raster") == "sds3d_gaussian_raster"
    assert capsys.readouterr().err == ""  # already built: nothing said
    key = build.build_key([build.CSRC / "gaussian_raster.cpp"])
    assert built[0] == built[1] == str(tmp_path / f"gaussian_raster-{key}")


@pytest.mark.skipif(build.compiler() is None, reason="no C++ compiler here")
def test_the_kernels_build_and_load():
    assert build.load_extension("gaussian_raster") is not None


def test_a_background_build_is_waited_for_not_repeated(monkeypatch, tmp_path):
    """`generate` starts the build while the prior loads; the first render then waits for it."""
    import threading

    import torch.utils.cpp_extension as cpp_extension

    started, release, builds = threading.Event(), threading.Event(), []

    def slow_load(name, build_directory, **kwargs):
        builds.append(name)
        started.set()
        release.wait(10)
        (tmp_path / build_directory / f"{name}{cpp_extension.LIB_EXT}").write_bytes(b"")
        return name

    monkeypatch.setattr(cpp_extension, "load", slow_load)
    monkeypatch.setenv("SDS3D_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(build, "compiler", lambda: "/usr/bin/c++")
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
        assert builds == ["sds3d_mesh_raster", "sds3d_mesh_raster"]  # one build, then its module
    finally:
        build._load_extension.cache_clear()


def test_a_process_that_ends_early_lets_its_background_build_finish(tmp_path):
    """A build cut off mid-way would leave torch's lock file for the next run to wait on."""
    marker = tmp_path / "built"
    script = f"""
import time
import torch.utils.cpp_extension as cpp_extension
from sds3d.cuda import build

def slow_load(name, build_directory, **kwargs):
    time.sleep(1.0)
    open({str(marker)!r}, "w").close()
    return name

cpp_extension.load = slow_load
build.compiler = lambda: "/usr/bin/c++"
build.build_in_background(["mesh_raster"])
raise SystemExit(2)  # e.g. the prior failed to load
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "SDS3D_BUILD_DIR": str(tmp_path / "builds")})
    assert result.returncode == 2 and marker.exists(), result.stderr
    assert "finishing the kernel build before exiting" in result.stderr
