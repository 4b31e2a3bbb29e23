"""A dependency-free progress bar for long loops (stderr; one line per update off a terminal)."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`update(done, **fields)` redraws at most every `interval` seconds. The rate is timed from
    construction, when `initial` items were done (a resumed run's iteration)."""

    def __init__(self, total: int, desc: str = "", stream: TextIO = sys.stderr,
                 interval: float = 0.5, enabled: bool = True, initial: int = 0):
        self.total, self.desc, self.stream = total, desc, stream
        self.interval, self.enabled = interval, enabled
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.start = time.time()
        self.last = 0.0
        self.initial = initial

    def update(self, done: int, force: bool = False, **fields: object) -> None:
        now = time.time()
        if not self.enabled or (not force and now - self.last < (self.interval if self.tty else 30)):
            return
        self.last = now
        rate = (now - self.start) / max(done - self.initial, 1)
        frac = done / max(self.total, 1)
        bar = "#" * int(20 * frac) + "-" * (20 - int(20 * frac))
        eta = rate * (self.total - done)
        extra = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in fields.items())
        line = (f"{self.desc} [{bar}] {done}/{self.total} {extra} | {rate:.2f} s/it "
                f"eta {eta / 60:.1f} min")
        self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
