"""What keeps a long run useful: the best checkpoint so far, and an early stop when the EBM runs
away (docs/method.md, "Long runs").

`BestKeeper` replaces `checkpoints/best` whenever the in-training metric improves. `CollapseGuard`
watches the energy gap |f(data) - f(revised)|: in a collapse it grows by orders of magnitude
within a few hundred iterations, long before the first NaN.
"""
from __future__ import annotations

import math
import statistics
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from ebm_vae.training.checkpoints import best_score, write_best
from ebm_vae.errors import UserError


class BestKeeper:
    """Keeps `checkpoints/best`: the state whose `metric` is the best so far (lowest, or highest
    with `higher_is_better`). On resume it continues from the score stored in the folder."""

    def __init__(self, run_dir: Path, metric: str, higher_is_better: bool = False):
        self.run_dir, self.metric, self.higher = Path(run_dir), metric, higher_is_better
        found = best_score(run_dir)
        self.value: Optional[float] = found[1] if found and found[0] == metric else None
        self.iteration: Optional[int] = found[2] if found and found[0] == metric else None

    def better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.value is None:
            return True
        return value > self.value if self.higher else value < self.value

    def offer(self, iteration: int, objects: dict[str, Any], row: Mapping[str, float]) -> bool:
        """Write `objects` as the new best if `row[metric]` beats the kept score; True if it did."""
        value = float(row.get(self.metric, math.nan))
        if not self.better(value):
            return False
        write_best(self.run_dir, iteration, objects, self.metric, value)
        self.value, self.iteration = value, iteration
        return True

    def describe(self) -> str:
        if self.value is None:
            return "no best checkpoint yet"
        return (f"best: {self.run_dir / 'checkpoints' / 'best'} (iteration {self.iteration}, "
                f"{self.metric} {self.value:.4g})")


class CollapseError(UserError, RuntimeError):
    """The EBM ran away (the energy gap exploded); training stopped before the next checkpoint."""


def energy_gap(row: Mapping[str, Any]) -> float:
    """|f(data) - f(revised)| of one log row."""
    return abs(float(row["f_data"]) - float(row["f_revised"]))


class CollapseGuard:
    """Fires when the energy gap exceeds `factor` times its median over the previous `window`
    iterations for `patience` iterations in a row. Off with factor 0; silent until the window
    is full (the energies change scale quickly in the first iterations)."""

    def __init__(self, factor: float, window: int, patience: int,
                 rows: Iterable[Mapping[str, Any]] = ()):
        self.factor, self.patience = factor, patience
        self.gaps: deque[float] = deque(maxlen=window)
        self.over = 0
        for row in rows:  # a resumed run: the log rows up to its checkpoint
            if "f_data" in row:
                self.gaps.append(energy_gap(row))

    def check(self, iteration: int, stats: Mapping[str, float]) -> Optional[str]:
        """Record this iteration; a one-line description of the runaway if it fires, else None."""
        gap = energy_gap(stats)
        if self.factor <= 0:
            return None
        full = len(self.gaps) == self.gaps.maxlen
        median = statistics.median(self.gaps) if self.gaps else math.nan
        self.over = self.over + 1 if full and gap > self.factor * median else 0
        if self.over < self.patience:
            self.gaps.append(gap)
            return None
        return (f"iteration {iteration}: the energy gap |f(data) - f(revised)| = {gap:.3g} has been "
                f"above {self.factor:g} x its median over the previous {len(self.gaps)} iterations "
                f"({median:.3g}) for {self.over} iterations: the EBM is running away")
