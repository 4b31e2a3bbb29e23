"""Curves of several runs side by side, from their log.csv files: a long CSV
(`config, iteration, metric, value`) and one PNG panel per metric, a line per run."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable

from ebm_vae.training.record import read_log
from ebm_vae.errors import UserError
from ebm_vae.utils.atomic import atomic_write
from ebm_vae.utils.images import save_plots

# derived columns: name -> function of a log row
DERIVED = {"energy_gap": lambda r: float(r["f_data"]) - float(r["f_revised"])}


class CurvesError(UserError, ValueError):
    """A run folder without a log, or a metric that no run logged."""


def _value(row: dict[str, str], metric: str) -> float:
    if metric in DERIVED:
        return DERIVED[metric](row)
    return float(row.get(metric, "nan"))


def run_curves(runs: dict[str, Path], metrics: Iterable[str], every: int = 1) -> list[dict]:
    """Rows {config, iteration, metric, value} of each run's finite values of each metric, at
    iterations that are multiples of `every` (metrics logged only now and then: every row)."""
    out = []
    for name, run_dir in runs.items():
        log = Path(run_dir) / "log.csv"
        if not log.is_file():
            raise CurvesError(f"{run_dir} has no log.csv")
        rows = read_log(log)
        for metric in metrics:
            values = [(int(row["iteration"]), _value(row, metric)) for row in rows]
            sparse = any(math.isnan(v) for _, v in values)  # logged only at evaluations
            out += [{"config": name, "iteration": it, "metric": metric, "value": v}
                    for it, v in values if math.isfinite(v) and (sparse or it % every == 0)]
    missing = [m for m in metrics if not any(r["metric"] == m for r in out)]
    if missing:
        raise CurvesError(f"no run logged {', '.join(missing)}")
    return out


def write_curves(rows: list[dict], csv_path: Path, png_path: Path, log_scale: Iterable[str] = ()
                 ) -> None:
    """The rows as CSV, and a PNG with a panel per metric (log10 of |value| for `log_scale`)."""
    with atomic_write(csv_path, "w") as fh:
        w = csv.DictWriter(fh, fieldnames=["config", "iteration", "metric", "value"])
        w.writeheader()
        w.writerows(rows)
    panels = []
    for metric in dict.fromkeys(r["metric"] for r in rows):
        logged = metric in set(log_scale)
        series: dict[str, tuple[list, list]] = {}
        for r in rows:
            if r["metric"] == metric and (not logged or r["value"] != 0):
                xs, ys = series.setdefault(r["config"], ([], []))
                xs.append(r["iteration"])
                ys.append(math.log10(abs(r["value"])) if logged else r["value"])
        panels.append((f"log10 |{metric}|" if logged else metric, series))
    save_plots(png_path, panels)
