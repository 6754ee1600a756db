"""Build-on-first-use of the C++ extensions in `csrc/` with torch.utils.cpp_extension (ninja).

Each kernel is built once per install into its own folder under `$SDS3D_BUILD_DIR` (default
`~/.cache/sds3d/torch_extensions`), named after a hash of its sources, the compiler flags, the torch
and Python versions and the install's location: two installs on one machine never rebuild each
other's kernels, and an edited source builds anew. The first build (15-40 s a kernel) is announced
on stderr; without a C++ compiler, or when a build fails, the kernel falls back to the slower
PyTorch reference after one warning.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import sys
import threading
import time
import warnings
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

CSRC = Path(__file__).resolve().parent / "csrc"
CFLAGS = ("-O3", "-fopenmp")
LDFLAGS = ("-fopenmp",)
# kernel -> (what it is, how much slower its PyTorch fallback is: BENCHMARKS.md), for the messages
KERNELS = {"gaussian_raster": ("the CPU Gaussian rasterizer", "~850x"),
           "mesh_raster": ("the CPU mesh rasterizer", "60-350x"),
           "hash_grid": ("the CPU hash-grid encoder", "~20x")}


def _build_dir() -> Path:
    """The root of every build: `$SDS3D_BUILD_DIR` or `~/.cache/sds3d/torch_extensions`."""
    root = os.environ.get("SDS3D_BUILD_DIR") or Path.home() / ".cache" / "sds3d" / "torch_extensions"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_key(sources: list[Path]) -> str:
    """16 hex digits identifying a build: the sources and every header in `csrc/`, the flags, the
    torch and Python versions, and where this install and its torch live."""
    import torch

    digest = hashlib.sha256()
    for path in [*sources, *sorted(CSRC.glob("*.h")), *sorted(CSRC.glob("*.cuh"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for part in (*CFLAGS, *LDFLAGS, torch.__version__, sys.version, str(CSRC), str(Path(torch.__file__).parent)):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def compiler() -> str | None:
    """The C++ compiler torch's extension builder will call (`$CXX`, else `c++`), or None when it
    cannot be found."""
    return shutil.which(os.environ.get("CXX") or "c++")


def _say(message: str) -> None:
    """One line on stderr that does not break a progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


_build_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


def load_extension(name: str):
    """Compile (once per install) and import `csrc/<name>.cpp`; returns the module, or None after one
    warning when there is no compiler, the build fails, or `SDS3D_DISABLE_NATIVE=1`. Thread-safe: a
    caller waits for a build another thread has started (`build_in_background`)."""
    with _build_locks[name]:
        return _load_extension(name)


_background_builds: list[threading.Thread] = []


def build_in_background(names) -> list[threading.Thread]:
    """Start building the kernels `names` in daemon threads (the compiler runs as a subprocess), so
    that a run's set-up (loading the prior, encoding prompts) overlaps the first build. A process
    that ends early still lets them finish (`_finish_background_builds`): a build cut off mid-way
    leaves torch's lock file behind, on which the next build would wait for ever."""
    threads = [threading.Thread(target=load_extension, args=(name,), name=f"build-{name}", daemon=True)
               for name in names]
    for thread in threads:
        thread.start()
    _background_builds.extend(threads)
    return threads


@atexit.register
def _finish_background_builds() -> None:
    running = [thread for thread in _background_builds if thread.is_alive()]
    if running:
        _say("sds3d: finishing the kernel build before exiting...")
    for thread in running:
        thread.join()


@lru_cache(maxsize=None)
def _load_extension(name: str):
    if os.environ.get("SDS3D_DISABLE_NATIVE") == "1":
        return None
    what, slower = KERNELS.get(name, (f"the native '{name}' kernel", "much"))
    if compiler() is None:
        warnings.warn(f"sds3d: no C++ compiler found ($CXX, or c++ on PATH), so {what} runs as its PyTorch "
                      f"fallback, {slower} slower; install one (e.g. `apt-get install g++`) and run again",
                      RuntimeWarning, stacklevel=2)
        return None
    try:
        from torch.utils.cpp_extension import LIB_EXT, load

        sources = [CSRC / f"{name}.cpp"]
        build_dir = _build_dir() / f"{name}-{build_key(sources)}"
        build_dir.mkdir(parents=True, exist_ok=True)
        fresh = not (build_dir / f"sds3d_{name}{LIB_EXT}").exists()
        if fresh:
            _say(f"sds3d: compiling {what}, once per install (~20 s)...")
        started = time.perf_counter()
        module = load(name=f"sds3d_{name}", sources=[str(s) for s in sources], extra_include_paths=[str(CSRC)],
                      extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS), build_directory=str(build_dir),
                      verbose=False)
        if fresh:
            _say(f"sds3d: compiled {name} in {time.perf_counter() - started:.0f} s (cached in {build_dir})")
        return module
    except Exception as error:  # a compiler problem must never stop the library from working
        message = str(error).strip().splitlines()
        warnings.warn(f"sds3d: could not build the native '{name}' kernel ({message[-1] if message else error}); "
                      "falling back to the slower PyTorch reference implementation.", RuntimeWarning, stacklevel=2)
        return None
