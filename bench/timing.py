"""The benchmarks' timer: the minimum wall time of a call, after one warm-up call."""
from __future__ import annotations

import time
from typing import Callable


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall time of `fn()` over `repeats` calls, in ms, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3
