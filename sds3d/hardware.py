"""What this CPU can do fast, detected rather than assumed."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
PRECISIONS = ("auto", "fp32", "bf16")  # how a UNet runs on the CPU (`use_bf16`)


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where that file does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model() -> str:
    """The CPU's model name as `lscpu` reports it (for timings), else `platform.processor()` or "unknown"."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AMX or AVX512-BF16), where bf16
    autocast speeds the prior's UNet up; elsewhere bf16 is emulated and slower than fp32."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def use_bf16(precision: str, name: str = "precision") -> bool:
    """Whether a CPU UNet runs under bf16 autocast: always for "bf16", never for "fp32", where the CPU
    has native bf16 (`fast_bf16`) for "auto"; ValueError naming `name` for anything else."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown {name} {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision == "bf16" or (precision == "auto" and fast_bf16())
