"""Refusing work that cannot fit in memory, before anything is allocated.

Each caller estimates the bytes it is about to hold at once (images as float32 N x H x W x C,
token ids N x sequence_length, a model's weights, gradients and one batch of activations) and
calls `require`. Estimates count only what must exist, so a refusal means the run would be
killed or would swap for hours; they are not a prediction of the peak.
"""
from __future__ import annotations

import os

from .errors import ConfigError


def available_bytes() -> int | None:
    """Memory this process can still get: MemAvailable plus free swap (/proc/meminfo), else
    the free physical pages (sysconf); None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f
                    if line.startswith(("MemAvailable:", "SwapFree:"))}
        if "MemAvailable" in info:
            return info["MemAvailable"] + info.get("SwapFree", 0)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def require(needed: float, what: str, fix: str) -> None:
    """Raise `ConfigError` when `what` needs more than the available memory, with `fix`."""
    available = available_bytes()
    if available is not None and needed > available:
        raise ConfigError(f"{what} need about {size(needed)} of memory, but {size(available)} "
                          f"is available; {fix}")


def size(n: float) -> str:
    """'65.5 TiB' and the like."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    step = 0
    while n >= 1024 and step < len(units) - 1:
        n /= 1024
        step += 1
    return f"{int(n)} B" if step == 0 else f"{n:.1f} {units[step]}"
