"""Build-on-first-use of the C++ extensions in `csrc/` with torch.utils.cpp_extension (ninja).

The build is cached under `$SDS3D_BUILD_DIR` (default `~/.cache/sds3d/torch_extensions`), keyed by
torch's own hashing of the sources and flags, so it compiles once (about 25 s) per machine.
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path

CSRC = Path(__file__).resolve().parent / "csrc"


def _build_dir() -> Path:
    root = os.environ.get("SDS3D_BUILD_DIR") or Path.home() / ".cache" / "sds3d" / "torch_extensions"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@lru_cache(maxsize=None)
def load_extension(name: str):
    """Compile (once) and import `csrc/<name>.cpp`; returns the module, or None after one warning
    when the build fails or `SDS3D_DISABLE_NATIVE=1`."""
    if os.environ.get("SDS3D_DISABLE_NATIVE") == "1":
        return None
    try:
        from torch.utils.cpp_extension import load

        flags = ["-O3", "-fopenmp"]
        build_dir = _build_dir() / name
        build_dir.mkdir(parents=True, exist_ok=True)
        return load(name=f"sds3d_{name}", sources=[str(CSRC / f"{name}.cpp")],
                    extra_include_paths=[str(CSRC)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
                    build_directory=str(build_dir), verbose=False)
    except Exception as error:  # a compiler problem must never stop the library from working
        message = str(error).strip().splitlines()
        warnings.warn(f"sds3d: could not build the native '{name}' kernel ({message[-1] if message else error}); "
                      "falling back to the slower PyTorch reference implementation.", RuntimeWarning, stacklevel=2)
        return None
