"""Memory a request would take, checked before it is allocated: a count the user gives (samples,
fills) that cannot fit is refused in one line, instead of running until the machine gives out."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

from ebm_vae.errors import UserError


class NotEnoughMemory(UserError, MemoryError):
    """A request would take more memory than is free."""


def _read_int(path: str, key: str = "") -> Optional[int]:
    """An integer file (cgroup), or the kB value of `key` in /proc/meminfo, in bytes; None if absent."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        text = Path(path).read_text()
        if not key:
            return int(text.strip())  # "max" (no limit): ValueError
        line = next(x for x in text.splitlines() if x.startswith(f"{key}:"))
        return int(line.split()[1]) * 1024
    return None


def available_bytes() -> Optional[int]:
    """Memory free for this process: the system's MemAvailable, less where a cgroup (container)
    limit leaves less; None where neither is known (not Linux)."""
    free = _read_int("/proc/meminfo", "MemAvailable")
    limit = _read_int("/sys/fs/cgroup/memory.max")
    used = _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        free = min(free, limit - used) if free is not None else limit - used
    return free


def gigabytes(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def check_fits(nbytes: int, what: str, hint: str = "ask for fewer") -> None:
    """Raise NotEnoughMemory (one line: how much `what` would take and how much is free) when
    `nbytes` exceed the free memory; do nothing where that is unknown."""
    free = available_bytes()
    if free is not None and nbytes > free:
        raise NotEnoughMemory(f"{what} would take {gigabytes(nbytes)} of memory, but "
                              f"{gigabytes(max(free, 0))} is free; nothing was started: {hint}")
