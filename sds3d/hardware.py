"""What this CPU can do fast, detected rather than assumed."""

from __future__ import annotations

import functools
from pathlib import Path

BF16_FLAGS = ("amx_bf16", "avx512_bf16")


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


def fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AMX or AVX512-BF16), where bf16
    autocast speeds the prior's UNet up; elsewhere bf16 is emulated and slower than fp32."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)
