"""Build-on-first-use of the C++ kernels in `csrc/`: shared libraries with a plain C ABI, loaded with ctypes.

The kernels include no torch headers (their Python callers check shapes, allocate the outputs and pass
raw pointers), so one compiles in a second or two instead of the 15-40 s a torch extension takes, and
the library does not depend on the torch version. Each kernel is built once per install into its own
folder under `$SDS3D_BUILD_DIR` (default `~/.cache/sds3d/kernels`), named after a hash of its
sources, the compiler and its flags, and the install's location: two installs on one machine never
rebuild each other's kernels, and an edited source builds anew. The library is written under a
temporary name and renamed, so two processes building at once both end with a whole one. The first
build is announced on stderr; without a C++ compiler, or when a build fails, the kernel falls back to
the slower PyTorch reference after one warning; a compiler without OpenMP (Apple clang) builds kernels
that run on one thread (`csrc/openmp.h`), said once per process. (The CUDA hash grid,
`csrc/hash_grid.cu`, is a torch extension built by `cuda/hash_grid.py`.)
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

CSRC = Path(__file__).resolve().parent / "csrc"
CFLAGS = ("-O3", "-shared", "-fPIC")
OPENMP = "-fopenmp"  # tried first; without it the kernels run on one thread
# tried in order: c++20 gives a 7% faster rasterizer backward than c++17 (gcc 12); gcc < 10 knows only c++17
STANDARDS = ("-std=c++20", "-std=c++17")
LIBRARY_SUFFIX = ".dll" if os.name == "nt" else ".so"
# kernel -> (what it is, how much slower its PyTorch fallback is: BENCHMARKS.md), for the messages
KERNELS = {"gaussian_raster": ("the CPU Gaussian rasterizer", "~850x"),
           "mesh_raster": ("the CPU mesh rasterizer", "60-350x"),
           "hash_grid": ("the CPU hash-grid encoder", "~20x")}


def _build_dir() -> Path:
    """The root of every build: `$SDS3D_BUILD_DIR` or `~/.cache/sds3d/kernels`."""
    root = os.environ.get("SDS3D_BUILD_DIR") or Path.home() / ".cache" / "sds3d" / "kernels"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_key(sources: list[Path]) -> str:
    """16 hex digits identifying a build: the sources and every header in `csrc/`, the compiler and its
    flags, and where this install lives."""
    digest = hashlib.sha256()
    for path in [*sources, *sorted(CSRC.glob("*.h")), *sorted(CSRC.glob("*.cuh"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for part in (*CFLAGS, OPENMP, *STANDARDS, str(compiler()), str(CSRC)):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def compiler() -> str | None:
    """The C++ compiler to call (`$CXX`, else `c++`), or None when it cannot be found."""
    return shutil.which(os.environ.get("CXX") or "c++")


def _say(message: str) -> None:
    """One line on stderr that does not break a progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


_build_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


def serial_library(library: Path) -> Path:
    """Where the one-thread build of `library` (a compiler without OpenMP) is written."""
    return library.with_name(library.stem + "_serial" + library.suffix)


def compile_library(source: Path, library: Path) -> Path:
    """Compile `source` into the shared library `library` with OpenMP and the first of `STANDARDS` the
    compiler accepts, or, when no standard builds with OpenMP, into `serial_library(library)` without it;
    written under a temporary name and then renamed. Returns the path written; raises RuntimeError with
    the compiler's first error line when nothing builds."""
    failures = []
    for openmp, target in (((OPENMP,), library), ((), serial_library(library))):
        partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
        for standard in STANDARDS:
            command = [compiler(), *CFLAGS, *openmp, standard, f"-I{CSRC}", str(source), "-o", str(partial)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode == 0:
                os.replace(partial, target)
                return target
            partial.unlink(missing_ok=True)
            lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
            errors = [line for line in lines if "error" in line.lower()]
            failures.append((errors or lines or [f"{command[0]} exited with {result.returncode}"])[0])
    raise RuntimeError(next((failure for failure in failures if OPENMP not in failure), failures[0]))


def load_extension(name: str):
    """Compile (once per install) and load `csrc/<name>.cpp`; returns the `ctypes.CDLL`, or None after
    one warning when there is no compiler, the build fails, or `SDS3D_DISABLE_NATIVE=1`. Thread-safe:
    a caller waits for a build another thread has started (`build_in_background`). ctypes releases the
    GIL during every call into the library."""
    with _build_locks[name]:
        return _load_extension(name)


def native_function(library: ctypes.CDLL, name: str, argtypes: list, restype=None):
    """`library.name` with its ctypes signature set (c_void_p for pointers, c_int64, c_double)."""
    function = getattr(library, name)
    function.argtypes, function.restype = argtypes, restype
    return function


def pointers(*tensors) -> list[int]:
    """The data pointers of contiguous CPU tensors (float32, int32 or int64), for a native call."""
    import torch

    for tensor in tensors:
        if tensor.device.type != "cpu" or not tensor.is_contiguous() or tensor.dtype not in (
                torch.float32, torch.int32, torch.int64):
            raise ValueError(f"native kernels take contiguous float32 / int32 / int64 CPU tensors, got "
                             f"{tensor.dtype} on {tensor.device} (contiguous: {tensor.is_contiguous()})")
    return [tensor.data_ptr() for tensor in tensors]


_background_builds: list[threading.Thread] = []


def build_in_background(names) -> list[threading.Thread]:
    """Start building the kernels `names` in daemon threads (the compiler runs as a subprocess), so
    that a run's set-up (loading the prior, encoding prompts) overlaps the first build. A process
    that ends early still lets them finish (`_finish_background_builds`), so the next run finds them."""
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


@lru_cache(maxsize=1)
def _warn_serial_once(cxx: str) -> None:
    warnings.warn(f"sds3d: the C++ compiler ({cxx}) has no OpenMP, so the native kernels run on one core; for "
                  "all cores use one that has it (g++, or clang with libomp) and delete ~/.cache/sds3d/kernels",
                  RuntimeWarning, stacklevel=3)


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
        source = CSRC / f"{name}.cpp"
        build_dir = _build_dir() / f"{name}-{build_key([source])}"
        build_dir.mkdir(parents=True, exist_ok=True)
        library = build_dir / f"sds3d_{name}{LIBRARY_SUFFIX}"
        built = next((path for path in (library, serial_library(library)) if path.exists()), None)
        if built is None:
            _say(f"sds3d: compiling {what}, once per install (a few seconds)...")
            started = time.perf_counter()
            built = compile_library(source, library)
            _say(f"sds3d: compiled {name} in {time.perf_counter() - started:.1f} s (cached in {build_dir})")
        if built != library:
            _warn_serial_once(compiler())
        return ctypes.CDLL(str(built))
    except Exception as error:  # a compiler problem must never stop the library from working
        message = str(error).strip().splitlines()
        warnings.warn(f"sds3d: could not build the native '{name}' kernel ({message[-1] if message else error}); "
                      "falling back to the slower PyTorch reference implementation.", RuntimeWarning, stacklevel=2)
        return None
