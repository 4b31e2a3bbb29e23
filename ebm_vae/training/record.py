"""What a training run writes into its folder: config.yaml (`start_run`), log.csv, sample grids,
losses.png, checkpoints, checkpoints/best and provenance. The `Trainer` calls a `RunRecord`; with
several data-parallel workers only worker 0 holds one, the others a `SilentRecord` that writes
nothing."""
from __future__ import annotations

import contextlib
import csv
import os
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from ebm_vae.core.config import TrainConfig, dump_config
from ebm_vae.training.checkpoints import latest_checkpoint, write_checkpoint
from ebm_vae.training.guards import BestKeeper
from ebm_vae.training.states import NonFiniteWeights
from ebm_vae.training.stopping import TrainingError
from ebm_vae.utils.atomic import WriteError, atomic_write
from ebm_vae.utils.images import save_grids, save_plots
from ebm_vae.utils.progress import Progress
from ebm_vae.utils.provenance import record_start
from ebm_vae.utils.runtime import seed_all
from ebm_vae.utils.vdl import VisualDLLog

Plots = list[tuple[str, list[str]]]


class Evaluation(NamedTuple):
    """An optional metric inside training: `run()` returns {key: value} every `every` iterations
    and at the end (those rows are always logged; other rows hold NaN, as the CSV has fixed
    columns), plotted as one more panel of losses.png titled `title`. The state with the best
    value of `best` so far is kept as checkpoints/best (training/guards.py)."""
    every: int
    keys: list[str]
    run: Callable[[], dict[str, float]]
    title: str
    best: str = ""  # the key that chooses checkpoints/best ("" = keep no best)
    higher_is_better: bool = False


class RunLog:
    """CSV log (`log.csv`) of one row per logged iteration, kept in memory for the plots.

    Rows are appended and flushed one at a time; `sync()` fsyncs them (before a checkpoint is
    written). On resume the rows up to the checkpoint are kept and the file is rewritten
    atomically; a torn row (a crash or a full disk during an append) is dropped with a warning."""

    def __init__(self, path: Path, keep_until: int | None):
        self.path = path
        self.rows: list[dict[str, Any]] = []  # values as numbers, or as read back from the CSV
        if keep_until is not None and path.exists():
            self.rows = [r for r in read_log(path) if int(r["iteration"]) <= keep_until]
            self._rewrite()
        elif path.exists():
            path.unlink()

    def _rewrite(self) -> None:
        if not self.rows:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        with atomic_write(self.path, "w") as fh:
            w = csv.DictWriter(fh, fieldnames=list(self.rows[0]))
            w.writeheader()
            w.writerows(self.rows)

    def append(self, row: dict[str, float]) -> None:
        if self.rows and list(row) != list(self.rows[0]):
            row = self._widen(row)
        new = not self.path.exists()
        self.rows.append(row)
        try:
            with open(self.path, "a", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(row))
                if new:
                    w.writeheader()
                w.writerow(row)
                fh.flush()
        except OSError as err:
            raise WriteError(f"cannot append to {self.path}: {err.strerror or err}") from err

    def _widen(self, row: dict[str, float]) -> dict[str, float]:
        """A row whose columns differ from the log's (a run resumed by code that logs more or
        fewer values): every row gets the union of the columns, NaN where it has no value, and
        the file is rewritten with the wider header; returns the row so widened."""
        keys = list(dict.fromkeys([*self.rows[0], *row]))
        if keys != list(self.rows[0]):
            self.rows = [{k: r.get(k, np.nan) for k in keys} for r in self.rows]
            self._rewrite()
        return {k: row.get(k, np.nan) for k in keys}

    def sync(self) -> None:
        """fsync the appended rows (called before each checkpoint)."""
        if not self.path.exists():
            return
        try:
            with open(self.path, "a") as fh:
                os.fsync(fh.fileno())
        except OSError as err:
            raise WriteError(f"cannot write {self.path}: {err.strerror or err}") from err

    def series(self, key: str) -> tuple[list[float], list[float]]:
        pts = [(float(r["iteration"]), float(r[key])) for r in self.rows if key in r]
        return [p[0] for p in pts], [p[1] for p in pts]

    def plot(self, path: Path, panels: list[tuple[str, list[str]]]) -> None:
        available = [(title, {k: self.series(k) for k in keys if self.rows and k in self.rows[-1]})
                     for title, keys in panels]
        save_plots(path, [p for p in available if p[1]])


def _row_ok(row: list[str], header: list[str]) -> bool:
    if len(row) != len(header):
        return False
    try:
        int(row[header.index("iteration")])
        for v in row:
            float(v)
    except ValueError:
        return False
    return True


def read_log(path: Path) -> list[dict[str, str]]:
    """The rows of a log.csv. A malformed row (wrong field count, a value that is not a
    number, or a last line without its newline: a torn append) is dropped with a warning."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    torn_tail = not text.endswith("\n") and text != ""
    if lines and lines[-1] == "":
        lines.pop()
    rows = list(csv.reader(lines))
    if not rows or (torn_tail and len(rows) == 1) or "iteration" not in rows[0]:
        if text.strip():
            _warn(f"{path}: no readable header; the old log rows are dropped")
        return []
    header, out = rows[0], []
    for i, row in enumerate(rows[1:], start=2):
        last = i == len(rows)
        if (last and torn_tail) or not _row_ok(row, header):
            _warn(f"{path}: dropped {'a torn last row' if last else 'a malformed row'} "
                  f"(line {i}: {','.join(row)[:60]!r})")
            continue
        out.append(dict(zip(header, row)))
    return out


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class RunRecord:
    """The run folder's writer for one training: the log (continued up to `resumed_at` on
    resume), the progress bar (from iteration `first` to `total`), grids and `plots`,
    checkpoints (`train.keep_every`), VisualDL (`train.visualdl`) and the best state by the
    `evaluation`'s `best` key (if any)."""

    def __init__(self, run_dir: Path, train: TrainConfig, plots: Plots,
                 evaluation: Optional[Evaluation], total: int, resumed_at: Optional[int],
                 progress: bool = True, first: int = 0):
        self.run_dir, self.keep_every = run_dir, train.keep_every
        self.plots = plots + [(evaluation.title, evaluation.keys)] if evaluation else plots
        self.vdl = VisualDLLog(run_dir) if train.visualdl else None
        record_start(run_dir, resumed_at)
        self.log = RunLog(run_dir / "log.csv", keep_until=resumed_at)
        self.keeper = (BestKeeper(run_dir, evaluation.best, evaluation.higher_is_better)
                       if evaluation and evaluation.best else None)
        self.bar = Progress(total, desc=run_dir.name, enabled=progress, initial=first)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.log.rows

    def note(self, message: str) -> None:
        print(message, file=sys.stderr)

    def config(self, cfg: Any) -> None:
        dump_config(cfg, self.run_dir / "config.yaml")

    def row(self, row: dict[str, float]) -> None:
        self.log.append(row)
        if self.vdl is not None:
            self.vdl.scalars(row)

    def progress(self, iteration: int, last: bool, **shown: Any) -> None:
        self.bar.update(iteration, force=last, **shown)

    def grids(self, iteration: int, panels: list) -> None:
        try:
            png = self.run_dir / "samples" / f"iter_{iteration:07d}.png"
            save_grids(png, panels)
            self.log.plot(self.run_dir / "losses.png", self.plots)
            if self.vdl is not None:
                self.vdl.image(iteration, png)
        except WriteError:
            raise
        except OSError as err:
            raise WriteError(f"cannot write in {self.run_dir}: {err.strerror or err}") from err

    def checkpoint(self, iteration: int, modules: dict[str, Any], info: Optional[dict] = None
                   ) -> Path:
        """The run's checkpoint of `iteration` (the log's rows are fsynced first)."""
        self.log.sync()
        try:
            return write_checkpoint(self.run_dir, iteration, modules, None, info, self.keep_every)
        except NonFiniteWeights as err:
            raise self._diverged(iteration, err) from err

    def offer_best(self, iteration: int, modules: dict[str, Any], row: dict[str, float]) -> None:
        if self.keeper is not None:
            try:
                self.keeper.offer(iteration, modules, row)
            except NonFiniteWeights as err:
                raise self._diverged(iteration, err) from err

    def _diverged(self, iteration: int, err: NonFiniteWeights) -> TrainingError:
        """The one-line stop of a run whose weights are no longer finite after `iteration`."""
        last = latest_checkpoint(self.run_dir)
        kept = (f"its newest checkpoint {last} is unchanged, and --resume continues from it"
                if last is not None else "it has no checkpoint")
        return TrainingError(f"after iteration {iteration}: {err}. Training stopped; {kept}. Try "
                             "a smaller learning rate or langevin.step_size (--resume DIR --set ...)")

    def describe_best(self) -> str:
        return self.keeper.describe() if self.keeper is not None else (
            "no best checkpoint (eval.every is 0)")

    def close(self) -> None:
        self.bar.close()
        if self.vdl is not None:
            self.vdl.close()


class SilentRecord(RunRecord):
    """A data-parallel worker other than 0: the same calls, nothing written."""

    def __init__(self, run_dir: Path, *args: Any, **kwargs: Any):
        self.run_dir, self.keeper, self.log = run_dir, None, None

    @property
    def rows(self) -> list[dict[str, Any]]:
        return []

    def note(self, message: str) -> None:
        pass

    def config(self, cfg: Any) -> None:
        pass

    def row(self, row: dict[str, float]) -> None:
        pass

    def progress(self, iteration: int, last: bool, **shown: Any) -> None:
        pass

    def grids(self, iteration: int, panels: list) -> None:
        pass

    def checkpoint(self, iteration: int, modules: dict[str, Any], info: Optional[dict] = None
                   ) -> Path:
        return self.run_dir / "checkpoints" / f"iter_{iteration:07d}"

    def close(self) -> None:
        pass


RUN_FILES = ("log.csv", "samples", "losses.png")


def prepare_run_dir(run_dir: Path, cfg: Any, resume: bool, write: bool = True) -> None:
    """Create the run folder and write the resolved config; refuse to clobber a run (a
    checkpoint, or a log or grids of a run killed before its first checkpoint). On resume the
    config is written by the `Trainer`, only after the checkpoint has loaded into the networks.
    Data-parallel: every worker checks, worker 0 (`write`) writes (atomically: the others may be
    reading)."""
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / "config.yaml").is_file():
            raise TrainingError(f"cannot resume: {run_dir / 'config.yaml'} not found")
        return
    ckpt = latest_checkpoint(run_dir)
    found = ([str(ckpt.relative_to(run_dir))] if ckpt is not None else []) + [
        f for f in RUN_FILES if (run_dir / f).exists()]
    if found:
        raise TrainingError(f"{run_dir} already holds a run ({', '.join(found)}); nothing was "
                            f"overwritten. Use --resume {run_dir} to continue it, or --out for "
                            "a new folder")
    if write:
        dump_config(cfg, run_dir / "config.yaml")


def start_run(cfg: Any, images: np.ndarray, run_dir: str | Path, resume: bool, write: bool = True
              ) -> tuple[np.ndarray, Path]:
    """Apply `data.limit`, check the images against the model, prepare the run folder and seed
    Paddle (so a fresh run's initialisation depends only on the seed)."""
    if cfg.data.limit is not None:
        images = images[:cfg.data.limit]
    expect = (cfg.model.channels, cfg.model.image_size, cfg.model.image_size)
    if tuple(images.shape[1:]) != expect:
        raise TrainingError(f"data '{cfg.data.name}' has images of shape {tuple(images.shape[1:])}, "
                            f"but the model expects {expect} (model.channels, model.image_size)")
    run_dir = Path(run_dir)
    prepare_run_dir(run_dir, cfg, resume, write)
    seed_all(cfg.seed)
    return images, run_dir
