"""The training loop: run folder, data order, logging, sample grids, checkpoints and resume.

`GenerationTask` is Algorithm 1 on unconditional images; `fit` drives any task with the same
small interface (`modules`, `set_epoch`, `step`, `panels`), so other tasks reuse the loop.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, NamedTuple, Protocol

import numpy as np
import paddle

from ebm_vae.core.config import Config, TrainConfig, dump_config
from ebm_vae.core.guards import BestKeeper, CollapseError, CollapseGuard
from ebm_vae.core.models import build_models
from ebm_vae.core.checkpoints import (CHECKPOINTS, latest_checkpoint, load_objects, snapshot_states,
                                      write_checkpoint)
from ebm_vae.core.states import CheckpointError
from ebm_vae.core.teach import NonFiniteError, decayed_lr, l2_norm, make_optimizers, teach_step
from ebm_vae.data.datasets import load_split
from ebm_vae.errors import Stopped, UserError
from ebm_vae.utils.atomic import WriteError, atomic_write
from ebm_vae.utils.images import save_grids, save_plots
from ebm_vae.utils.parallel import (average_batch_norm, check_shards, data_parallel, init_world,
                                    mean_over_workers, mean_values, seed_worker, shard, world)
from ebm_vae.utils.progress import Progress
from ebm_vae.utils.provenance import record_start
from ebm_vae.utils.runlock import run_lock
from ebm_vae.utils.runtime import configure_runtime, seed_all

GRID_IMAGES = 64


class TrainingError(UserError, RuntimeError):
    """Training stopped: a non-finite quantity, or a run folder that cannot be used."""


class Task(Protocol):
    def modules(self) -> dict[str, Any]: ...
    def set_epoch(self, epoch: int) -> dict[str, float]: ...
    def step(self, batch: np.ndarray) -> dict[str, float]: ...
    def panels(self) -> list[tuple[str, np.ndarray]]: ...


class TeachTask:
    """What every variational-MCMC-teaching task shares: the three networks, one Adam for theta
    and one for (alpha, phi), and the per-epoch learning-rate decay [CODE]."""

    def __init__(self, models: Any, train: TrainConfig):
        self.models, self.train_cfg = models, train
        self.opt_ebm, self.opt_vae = make_optimizers(models, train.lr_ebm, train.lr_vae,
                                                     train.beta1, train.beta2)

    def modules(self) -> dict[str, Any]:
        return {**self.models._asdict(), "opt_ebm": self.opt_ebm, "opt_vae": self.opt_vae}

    def set_epoch(self, epoch: int) -> dict[str, float]:
        t = self.train_cfg
        lrs = {"lr_ebm": decayed_lr(t.lr_ebm, epoch, t.lr_decay_rate, t.lr_decay_epochs),
               "lr_vae": decayed_lr(t.lr_vae, epoch, t.lr_decay_rate, t.lr_decay_epochs)}
        self.opt_ebm.set_lr(lrs["lr_ebm"])
        self.opt_vae.set_lr(lrs["lr_vae"])
        return lrs


class GenerationTask(TeachTask):
    """Variational MCMC teaching of f_theta, q_phi, g_alpha on unconditional images.
    Data-parallel (ebm_vae/utils/parallel.py): each worker runs Algorithm 1 on its equal shard of
    the batch and of the chains, with gradients averaged over the workers."""

    def __init__(self, cfg: Config):
        super().__init__(build_models(cfg.model), cfg.train)
        self.cfg = cfg
        self.world = world()
        self.synced = data_parallel(self.models, self.world)  # self.models on one process
        self.last: tuple[np.ndarray, np.ndarray] | None = None

    def step(self, batch: np.ndarray) -> dict[str, float]:
        t, w = self.cfg.train, self.world
        seed_worker(w)  # several workers: each draws its own chains
        x = paddle.to_tensor(shard(batch, w))  # the whole batch on one process
        grad_rms: list[float] = []
        stats, x_hat, x_tilde = teach_step(self.synced, self.opt_ebm, self.opt_vae, x,
                                           t.num_chains // w.size, self.cfg.model.latent_dim,
                                           self.cfg.langevin, t.gamma, t.data_noise,
                                           t.energy_penalty, grad_rms)
        average_batch_norm(self.models, w)
        # [CODE] monitor "avg.L2 dist": squared distance of the batch-mean images, per pixel.
        mean_tilde, mean_x = (mean_over_workers(v.mean(axis=0), w) for v in (x_tilde, x))
        l2 = float(((mean_tilde - mean_x) ** 2).mean())
        self.last = (x_hat[:GRID_IMAGES].numpy(), x_tilde[:GRID_IMAGES].numpy())
        stats = asdict(stats)  # means over this worker's shard; the gradient norms are global
        stats.update(chain_diagnostics(x_hat, x_tilde, grad_rms))
        stats.update(mean_values({k: v for k, v in stats.items() if "grad_norm" not in k}, w))
        return {**stats, "l2_mean_dist": l2, "ebm_weight_norm": l2_norm(self.models.ebm.parameters())}

    def panels(self) -> list[tuple[str, np.ndarray]]:
        if self.last is None:
            return []
        return [("VAE proposals g(z)", self.last[0]), ("Langevin-revised", self.last[1])]


def chain_diagnostics(x_hat: paddle.Tensor, x_tilde: paddle.Tensor, grad_rms: list[float]
                      ) -> dict[str, float]:
    """How far the Langevin chains moved (RMS per pixel of x_tilde - x_hat), how far they left
    the data range [-1, 1] (largest |x_tilde|), and the RMS of df/dx at the last step."""
    return {"chain_move": math.sqrt(float(((x_tilde - x_hat) ** 2).mean())),
            "revised_abs_max": float(x_tilde.abs().max()),
            "langevin_grad_rms": grad_rms[-1] if grad_rms else 0.0}


class Evaluation(NamedTuple):
    """An optional metric inside `fit`: `run()` returns {key: value} every `every` iterations and
    at the end (those rows are always logged; other rows hold NaN, as the CSV has fixed columns),
    plotted as one more panel of losses.png titled `title`. The state with the best value of
    `best` so far is kept as checkpoints/best (core/guards.py)."""
    every: int
    keys: list[str]
    run: Callable[[], dict[str, float]]
    title: str
    best: str = ""  # the key that chooses checkpoints/best ("" = keep no best)
    higher_is_better: bool = False


# builds the `Evaluation` of a run: (models, cfg, run_dir, progress) -> Evaluation
EvaluationHook = Callable[[Any, Config, Path, bool], Evaluation]


def iters_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def iteration_seed(seed: int, iteration: int) -> int:
    """Paddle is reseeded before every iteration (z, Langevin noise, dropout, reparameterisation)
    from (seed, iteration), so a resumed run needs no generator state and repeats an
    uninterrupted run exactly, on any Paddle version."""
    return int(np.random.SeedSequence([seed, iteration]).generate_state(1)[0] >> 1)


def epoch_order(n: int, shuffle: str, seed: int, epoch: int) -> np.ndarray:
    """Data order of one epoch: fixed ('never'), one seeded permutation ('once'), or a new
    seeded permutation per epoch ('every_epoch'). Pure function of its arguments, so a resumed
    run sees exactly the batches an uninterrupted one would."""
    if shuffle == "never":
        return np.arange(n)
    key = [seed, 0] if shuffle == "once" else [seed, epoch + 1]
    return np.random.default_rng(key).permutation(n)


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


GENERATION_PLOTS = [("EBM loss: mean f(revised) - mean f(data)", ["loss_ebm"]),
                    ("f on data and on revised samples", ["f_data", "f_revised"]),
                    ("VAE loss: SSE + gamma KL", ["loss_vae"]),
                    ("reconstruction SSE and KL", ["recon", "kl"]),
                    ("Langevin: RMS df/dx (last step), RMS move", ["langevin_grad_rms", "chain_move"]),
                    ("EBM weight norm", ["ebm_weight_norm"])]


def _save_state(task: Task, run_dir: Path, iteration: int, states: dict | None = None,
                info: dict | None = None, log: RunLog | None = None, keep_every: int = 0) -> Path:
    """Write the run's checkpoint for `iteration` (the task's current states, or `states`);
    the log's appended rows are fsynced first."""
    if log is not None:
        log.sync()
    return write_checkpoint(run_dir, iteration, task.modules(), states, info, keep_every)


RUN_FILES = ("log.csv", "samples", "losses.png")


def prepare_run_dir(run_dir: Path, cfg: Any, resume: bool) -> None:
    """Create the run folder and write the resolved config; refuse to clobber a run (a
    checkpoint, or a log or grids of a run killed before its first checkpoint). On resume the
    config is written by `fit`, only after the checkpoint has loaded into the networks.
    Data-parallel: every worker checks, worker 0 writes (atomically: the others may be reading)."""
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
    if world().rank == 0:
        dump_config(cfg, run_dir / "config.yaml")


def start_run(cfg: Any, images: np.ndarray, run_dir: str | Path, resume: bool
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
    prepare_run_dir(run_dir, cfg, resume)
    seed_all(cfg.seed)
    return images, run_dir


class Interrupted(TrainingError, Stopped):
    """Training stopped on SIGINT or SIGTERM after saving a checkpoint; `exit_code` is
    128 + the signal number (130, 143). A TrainingError, so tools that catch only that still
    print its one line."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path, run_dir: Path):
        name = signal.Signals(signum).name
        super().__init__(f"{name}: stopped after iteration {iteration}, checkpoint saved in "
                         f"{checkpoint}; continue with --resume {run_dir} (and --max-iters, as before)")
        self.signum, self.exit_code = signum, 128 + signum


class _Abandon(BaseException):
    """Raised inside an iteration by a second signal: the iteration is dropped."""


class _StopSignals:
    """SIGINT / SIGTERM during `fit`: the first one lets the current iteration finish, then `fit`
    saves and stops; a second one abandons the iteration at once (its state is not saved, the
    one before it is). Installed only in the main thread of a single process."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self.in_step = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            print(f"\n{signal.Signals(signum).name}: finishing this iteration, then saving a "
                  "checkpoint (send it again to stop at once)", file=sys.stderr, flush=True)
        elif self.in_step:
            raise _Abandon()

    @contextlib.contextmanager
    def step(self) -> Any:
        self.in_step = True
        try:
            yield
        finally:
            self.in_step = False


def _nonfinite_message(err: NonFiniteError, it: int, epoch: int, saved: Path | str) -> str:
    if str(getattr(err, "quantity", "")).startswith("VAE"):
        what = ("The EBM had already taken this iteration's Adam step, the VAE had not; that EBM "
                "step is discarded")
    else:
        what = "No network was updated in this iteration"
    return (f"iteration {it + 1} (epoch {epoch}): {err}. {what}. The state after iteration {it} "
            f"(all networks and both optimisers) is the run's checkpoint {saved}; --resume "
            "continues from it. Try a smaller langevin.step_size or learning rate "
            "(--resume DIR --set ...)")


def _collapse_message(runaway: str, run_dir: Path, saved: int | None,
                      keeper: BestKeeper | None) -> str:
    last = f"checkpoint of iteration {saved}" if saved is not None else "no checkpoint"
    best = keeper.describe() if keeper is not None else "no best checkpoint (eval.every is 0)"
    return (f"{runaway}. Training stopped; the last {last} is kept and nothing saved was changed; "
            f"{best}. Resume from a checkpoint before the runaway with a smaller step, e.g. "
            f"--resume {run_dir} --set train.lr_ebm=... (see docs/method.md, Long runs)")


def fit(task: Task, images: np.ndarray, run_dir: Path, train: TrainConfig, seed: int,
        shuffle: str, max_iters: int | None = None, resume: bool = False,
        plots: list[tuple[str, list[str]]] = GENERATION_PLOTS, progress: bool = True,
        evaluation: Evaluation | None = None, config: Any = None) -> int:
    """Train `task` on `images` ([N, C, H, W] in [-1, 1]); returns the final iteration count.

    `max_iters` counts all iterations of the run, resumed ones included. Paddle must already be
    seeded and the task built (so a fresh run's initialisation depends only on the seed).
    Checkpoints hold the modules and the iteration; the data order and the random draws of
    each iteration are functions of (seed, epoch) and (seed, iteration). On resume the
    checkpoint must fit the task's networks exactly, and only then is `config` (the resolved
    config, overrides included) written to config.yaml. A run without a checkpoint yet resumes
    from iteration 0. Non-finite values, SIGINT and SIGTERM save the state after the last
    completed iteration. Data-parallel: every worker runs this loop; worker 0 alone writes the
    log, grids, plots and checkpoints.
    """
    run_dir = Path(run_dir)
    keep = train.keep_every
    if evaluation is not None:
        plots = plots + [(evaluation.title, evaluation.keys)]
    n = len(images)
    per_epoch = iters_per_epoch(n, train.batch_size)
    total = per_epoch * train.epochs if max_iters is None else min(max_iters, per_epoch * train.epochs)
    main = world().rank == 0
    it, saved = 0, None
    if resume:
        found = latest_checkpoint(run_dir)
        if found is not None:
            try:
                it = load_objects(run_dir, task.modules())
            except CheckpointError as err:
                raise TrainingError(f"cannot resume: {err}") from err
            saved = it
            if main:
                print(f"resuming from iteration {it} (checkpoint {found}); the run stops at "
                      f"iteration {total}", file=sys.stderr)
        elif main:
            _warn(f"{run_dir} has no checkpoint yet: starting again from iteration 0")
        if main and config is not None:
            dump_config(config, run_dir / "config.yaml")
    if main:
        record_start(run_dir, it if resume else None)
    log = RunLog(run_dir / "log.csv", keep_until=it if resume else None) if main else None
    keeper = (BestKeeper(run_dir, evaluation.best, evaluation.higher_is_better)
              if main and evaluation is not None and evaluation.best else None)
    guard = CollapseGuard(train.collapse_factor, train.collapse_window, train.collapse_patience,
                          log.rows if log is not None else [])
    bar = Progress(total, desc=run_dir.name, enabled=progress and main, initial=it)
    lrs: dict[str, float] = {}
    epoch = -1
    stop = _StopSignals(enabled=world().size == 1)
    try:
        with stop:
            while it < total and stop.signum is None:
                if it // per_epoch != epoch:
                    epoch = it // per_epoch
                    lrs = task.set_epoch(epoch)
                    order = epoch_order(n, shuffle, seed, epoch)
                b = it % per_epoch
                batch = images[order[b * train.batch_size:(b + 1) * train.batch_size]]
                before = snapshot_states(task.modules())  # the last good state, if this fails
                start = time.perf_counter()
                seed_all(iteration_seed(seed, it))
                try:
                    with stop.step():
                        stats = task.step(batch)
                except NonFiniteError as err:
                    path = (_save_state(task, run_dir, it, before, log=log, keep_every=keep, info={
                        "stopped": f"iteration {it + 1}: {err}"}) if main
                            else run_dir / CHECKPOINTS / f"iter_{it:07d}")
                    raise TrainingError(_nonfinite_message(err, it, epoch, path)) from err
                except _Abandon:
                    path = (_save_state(task, run_dir, it, before, log=log, keep_every=keep) if main
                            else run_dir / CHECKPOINTS)
                    raise Interrupted(stop.signum, it, path, run_dir) from None
                it += 1
                row = {"iteration": it, "epoch": epoch, **stats, **lrs,
                       "sec_per_iter": time.perf_counter() - start}
                due = evaluation is not None and (it % evaluation.every == 0 or it == total)
                if evaluation is not None:
                    row.update(evaluation.run() if due else dict.fromkeys(evaluation.keys, math.nan))
                runaway = guard.check(it, stats)
                if runaway is not None:
                    if main:
                        log.append(row)
                    raise CollapseError(_collapse_message(runaway, run_dir, saved, keeper))
                if keeper is not None and due:
                    keeper.offer(it, task.modules(), row)
                if not main:
                    continue
                try:
                    if it % train.log_every == 0 or it == total or due:
                        log.append(row)
                    bar.update(it, force=it == total, epoch=epoch, ebm=stats["loss_ebm"],
                               vae=stats["loss_vae"])
                    if it % train.sample_every == 0 or it == total:
                        save_grids(run_dir / "samples" / f"iter_{it:07d}.png", task.panels())
                        log.plot(run_dir / "losses.png", plots)
                except WriteError:
                    raise
                except OSError as err:
                    raise WriteError(f"cannot write in {run_dir}: {err.strerror or err}") from err
                if it % train.checkpoint_every == 0 or it == total:
                    _save_state(task, run_dir, it, log=log, keep_every=keep)
                    saved = it
            if stop.signum is not None:
                path = (_save_state(task, run_dir, it, log=log, keep_every=keep) if main and saved != it
                        else latest_checkpoint(run_dir) or run_dir / CHECKPOINTS)
                raise Interrupted(stop.signum, it, path, run_dir)
    finally:
        bar.close()
    return it


def train_generation(cfg: Config, run_dir: str | Path, max_iters: int | None = None,
                     resume: bool = False, images: np.ndarray | None = None,
                     progress: bool = True, threads: int | None = None,
                     evaluation: EvaluationHook | None = None) -> GenerationTask:
    """Load the data (unless `images` is given), build the models and run Algorithm 1, holding
    the run folder's lock throughout (a second trainer of the folder is refused).

    `evaluation` builds the in-training quality curve when `cfg.eval.every > 0`
    (`ebm_vae.eval.evaluate.training_evaluation`; passed in, as core does not import eval)."""
    if cfg.eval.every > 0 and evaluation is None:
        raise TrainingError("eval.every > 0 needs the evaluation hook: call train_generation(..., "
                            "evaluation=ebm_vae.eval.evaluate.training_evaluation)")
    configure_runtime(cfg.device, threads)
    workers = init_world().size  # > 1 under python -m paddle.distributed.launch
    with run_lock(run_dir, enabled=world().rank == 0):
        if images is None:
            images, _ = load_split(cfg.data.name, cfg.data.root, "train")
        images, run_dir = start_run(cfg, images, run_dir, resume)
        try:
            check_shards(cfg.train.batch_size, cfg.train.num_chains, len(images), workers)
        except ValueError as err:
            raise TrainingError(str(err)) from err
        task = GenerationTask(cfg)  # several workers: starts from worker 0's parameters
        quality = None
        if cfg.eval.every > 0 and world().rank == 0:  # offline quality curve (classifier-feature FID)
            quality = evaluation(task.models, cfg, run_dir, progress)
        fit(task, images, run_dir, cfg.train, cfg.seed, cfg.data.shuffle, max_iters, resume,
            progress=progress, evaluation=quality, config=cfg)
    return task
