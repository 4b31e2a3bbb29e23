"""The training loop: data order, seeding, the iteration's two halves, logging, checkpoints and
resume, for any task with the small `Task` interface (generation in core/generation.py,
completion in ebm_vae/completion/train.py). Data parallelism wraps the task (utils/parallel.py)
and what the run folder receives goes through a record (core/record.py), so `fit` has no worker
branches.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Protocol, Union

import numpy as np
import paddle

from ebm_vae.core.checkpoints import CHECKPOINTS, latest_checkpoint, load_objects
from ebm_vae.core.config import TrainConfig
from ebm_vae.core.guards import CollapseError, CollapseGuard
from ebm_vae.core.record import Plots, RunRecord, SilentRecord, start_run
from ebm_vae.core.states import CheckpointError
from ebm_vae.core.stopping import Abandon, Interrupted, StopSignals, TrainingError
from ebm_vae.core.teach import NonFiniteError, decayed_lr, make_optimizers
from ebm_vae.utils.parallel import DataParallelTask, init_world
from ebm_vae.utils.runlock import run_lock
from ebm_vae.utils.runtime import configure_runtime, seed_all


class Task(Protocol):
    """What `fit` drives. One iteration is `learn(revise(batch))`: `revise` (steps 1-3 of
    Algorithm 1) changes no parameter, so a second Ctrl-C may abandon it; `learn` (steps 4-5)
    updates the networks and returns the values to log."""
    models: NamedTuple
    def modules(self) -> dict[str, Any]: ...
    def set_epoch(self, epoch: int) -> dict[str, float]: ...
    def revise(self, batch: np.ndarray) -> Any: ...
    def learn(self, drawn: Any) -> dict[str, float]: ...
    def panels(self) -> list[tuple[str, np.ndarray]]: ...


class TeachTask:
    """What every variational-MCMC-teaching task shares: the three networks, one Adam for theta
    and one for (alpha, phi), and the per-epoch learning-rate decay [CODE]. `synced` are the
    networks the iteration runs (data-parallel wrappers after `distribute`), `chains` its
    number of chains."""

    def __init__(self, models: Any, train: TrainConfig):
        self.models, self.train_cfg = models, train
        self.synced, self.chains = models, train.num_chains
        self.opt_ebm, self.opt_vae = make_optimizers(models, train.lr_ebm, train.lr_vae,
                                                     train.beta1, train.beta2)

    def distribute(self, workers: int, synced: Any) -> None:
        """Run as one of `workers` data-parallel workers (utils/parallel.py)."""
        self.synced = synced

    def modules(self) -> dict[str, Any]:
        return {**self.models._asdict(), "opt_ebm": self.opt_ebm, "opt_vae": self.opt_vae}

    def set_epoch(self, epoch: int) -> dict[str, float]:
        t = self.train_cfg
        lrs = {"lr_ebm": decayed_lr(t.lr_ebm, epoch, t.lr_decay_rate, t.lr_decay_epochs),
               "lr_vae": decayed_lr(t.lr_vae, epoch, t.lr_decay_rate, t.lr_decay_epochs)}
        self.opt_ebm.set_lr(lrs["lr_ebm"])
        self.opt_vae.set_lr(lrs["lr_vae"])
        return lrs


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


GENERATION_PLOTS = [("EBM loss: mean f(revised) - mean f(data)", ["loss_ebm"]),
                    ("f on data and on revised samples", ["f_data", "f_revised"]),
                    ("VAE loss: SSE + gamma KL", ["loss_vae"]),
                    ("reconstruction SSE and KL", ["recon", "kl"]),
                    ("Langevin: RMS df/dx (last step), RMS move", ["langevin_grad_rms", "chain_move"]),
                    ("EBM weight norm", ["ebm_weight_norm"])]


def _nonfinite_message(err: NonFiniteError, it: int, epoch: int, saved: Path | str) -> str:
    return (f"iteration {it + 1} (epoch {epoch}): {err}. No network was updated in this "
            f"iteration. The state after iteration {it} "
            f"(all networks and both optimisers) is the run's checkpoint {saved}; --resume "
            "continues from it. Try a smaller langevin.step_size or learning rate "
            "(--resume DIR --set ...)")


def _collapse_message(runaway: str, run_dir: Path, saved: int | None, record: RunRecord) -> str:
    last = f"checkpoint of iteration {saved}" if saved is not None else "no checkpoint"
    best = record.describe_best()
    return (f"{runaway}. Training stopped; the last {last} is kept and nothing saved was changed; "
            f"{best}. Resume from a checkpoint before the runaway with a smaller step, e.g. "
            f"--resume {run_dir} --set train.lr_ebm=... (see docs/method.md, Long runs)")


def _buffers(models: NamedTuple) -> list[tuple[paddle.Tensor, paddle.Tensor]]:
    """The networks' untrained state (batch-norm running statistics: Paddle keeps them as
    parameters without gradient) with copies: forward passes in training mode update it, so a
    failed or abandoned iteration puts it back."""
    with paddle.no_grad():
        return [(t, t.clone()) for layer in models for t in layer.state_dict().values()
                if t.stop_gradient]


def _restore(buffers: list[tuple[paddle.Tensor, paddle.Tensor]]) -> None:
    for buffer, copy in buffers:
        buffer.set_value(copy)


def _iteration(task: Task, batch: np.ndarray, it: int, seed: int, stop: StopSignals,
               record: RunRecord, epoch: int) -> dict[str, float]:
    """Iteration it + 1: `learn(revise(batch))` with Paddle seeded from (seed, it). Both halves
    check their values before any update, so on a non-finite value, or a second signal during
    the revision, the state after iteration `it` is saved (its buffers put back) and the run
    stops."""
    buffers = _buffers(task.models)
    seed_all(iteration_seed(seed, it))
    try:
        with stop.abandonable():
            drawn = task.revise(batch)  # steps 1-3: no parameter changes
        return task.learn(drawn)  # steps 4-5
    except NonFiniteError as err:
        _restore(buffers)
        path = record.checkpoint(it, task.modules(), {"stopped": f"iteration {it + 1}: {err}"})
        raise TrainingError(_nonfinite_message(err, it, epoch, path)) from err
    except Abandon:
        _restore(buffers)
        path = record.checkpoint(it, task.modules())
        raise Interrupted(stop.signum, it, path, record.run_dir) from None
    except MemoryError as err:  # Paddle's ResourceExhausted: chains or batch too large
        why = (str(err).strip().splitlines() or ["out of memory"])[0].rstrip(".")
        raise TrainingError(f"iteration {it + 1}: {why}. Training stopped; the run's "
                            "checkpoints are unchanged. Lower train.num_chains or train.batch_size "
                            "(--resume DIR --set ...)") from None


def _write(record: RunRecord, task: Task, train: TrainConfig, row: dict[str, float],
           total: int, evaluated: bool) -> bool:
    """Log row, progress, grids and checkpoint of the iteration `row` ends, each when due
    (`train.*_every`); True if a checkpoint was written."""
    it, last = int(row["iteration"]), int(row["iteration"]) == total
    if it % train.log_every == 0 or last or evaluated:
        record.row(row)
    record.progress(it, last, epoch=row["epoch"], ebm=row["loss_ebm"], vae=row["loss_vae"])
    if it % train.sample_every == 0 or last:
        record.grids(it, task.panels())
    keep = train.keep_every
    if it % train.checkpoint_every == 0 or last or (keep > 0 and it % keep == 0):
        record.checkpoint(it, task.modules())
        return True
    return False


def _resume(task: Task, run_dir: Path) -> Optional[int]:
    """Load the run's newest checkpoint into the task; its iteration, None if there is none."""
    if latest_checkpoint(run_dir) is None:
        return None
    try:
        return load_objects(run_dir, task.modules())
    except CheckpointError as err:
        raise TrainingError(f"cannot resume: {err}") from err


def _resumed(record: RunRecord, run_dir: Path, saved: Optional[int], total: int,
             config: Any) -> None:
    """Say where a resumed run continues, then write its resolved config (after the load)."""
    record.note(f"resuming from iteration {saved} (checkpoint {latest_checkpoint(run_dir)}); "
                f"the run stops at iteration {total}" if saved is not None else
                f"warning: {run_dir} has no checkpoint yet: starting again from iteration 0")
    if config is not None:
        record.config(config)


def _evaluated(evaluation: Optional[Evaluation], due: bool) -> dict[str, float]:
    """The evaluation's values when due, NaN in its columns otherwise (the CSV's columns are fixed)."""
    if evaluation is None:
        return {}
    return evaluation.run() if due else dict.fromkeys(evaluation.keys, math.nan)


def _begin(task: Task, run_dir: Path, train: TrainConfig, total: int, resume: bool,
           start: Optional[int], plots: Plots, evaluation: Optional[Evaluation], config: Any,
           record_type: type[RunRecord], progress: bool) -> tuple[RunRecord, int, Optional[int]]:
    """Open the run's record: (record, first iteration, iteration of the newest checkpoint)."""
    saved = _resume(task, run_dir) if resume else None
    it = (saved or 0) if resume else (start or 0)
    plots = plots + [(evaluation.title, evaluation.keys)] if evaluation is not None else plots
    record = record_type(run_dir, total, it if resume else None, plots, train.keep_every,
                         evaluation.best if evaluation else "",
                         bool(evaluation and evaluation.higher_is_better), progress, first=it,
                         visualdl=train.visualdl)
    if resume:
        _resumed(record, run_dir, saved, total, config)
    elif start is not None:  # a --resume before the next checkpoint goes on from these weights
        saved = it
        record.checkpoint(it, task.modules())
    return record, it, saved


def fit(task: Task, images: np.ndarray, run_dir: Path, train: TrainConfig, seed: int,
        shuffle: str, max_iters: int | None = None, resume: bool = False,
        plots: Plots = GENERATION_PLOTS, progress: bool = True,
        evaluation: Evaluation | None = None, config: Any = None,
        record_type: type[RunRecord] = RunRecord, signals: bool = True,
        start: Optional[int] = None) -> int:
    """Train `task` on `images` ([N, C, H, W]); returns the final iteration count.

    `max_iters` counts all iterations of the run, resumed ones included. Paddle must already be
    seeded and the task built (a fresh run's initialisation depends only on the seed); `start`:
    the task holds trained networks of that iteration (see `train`), where this run begins, its
    first checkpoint written at once. Data order and random draws are functions of (seed, epoch)
    and (seed, iteration). On resume the checkpoint must fit the networks exactly, and only then
    is `config` (resolved, overrides included) written to config.yaml; a run without a
    checkpoint starts again from 0. Non-finite values, SIGINT and SIGTERM (`signals`) save the
    state after the last completed iteration. `record_type`: what writes the run folder
    (`SilentRecord` on data-parallel workers other than 0)."""
    run_dir, per_epoch = Path(run_dir), iters_per_epoch(len(images), train.batch_size)
    planned = per_epoch * train.epochs
    total = planned if max_iters is None else min(max_iters, planned)
    record, it, saved = _begin(task, run_dir, train, total, resume, start, plots, evaluation,
                               config, record_type, progress)
    guard = CollapseGuard(train.collapse_factor, train.collapse_window, train.collapse_patience,
                          record.rows)
    epoch, stop = -1, StopSignals(enabled=signals)
    try:
        with stop:
            while it < total and stop.signum is None:
                if it // per_epoch != epoch:
                    epoch, lrs = it // per_epoch, task.set_epoch(it // per_epoch)
                    order = epoch_order(len(images), shuffle, seed, epoch)
                b, began = it % per_epoch, time.perf_counter()
                batch = images[order[b * train.batch_size:(b + 1) * train.batch_size]]
                stats = _iteration(task, batch, it, seed, stop, record, epoch)
                it += 1
                row = {"iteration": it, "epoch": epoch, **stats, **lrs,
                       "sec_per_iter": time.perf_counter() - began}
                due = evaluation is not None and (it % evaluation.every == 0 or it == total)
                row.update(_evaluated(evaluation, due))
                runaway = guard.check(it, stats)
                if runaway is not None:
                    record.row(row)
                    raise CollapseError(_collapse_message(runaway, run_dir, saved, record))
                if due:
                    record.offer_best(it, task.modules(), row)
                saved = it if _write(record, task, train, row, total, due) else saved
            if stop.signum is not None:
                path = (record.checkpoint(it, task.modules()) if saved != it
                        else latest_checkpoint(run_dir) or run_dir / CHECKPOINTS)
                raise Interrupted(stop.signum, it, path, run_dir)
    finally:
        record.close()
    return it


# builds a task's in-training `Evaluation`: (task, run_dir) -> Evaluation
EvaluationBuilder = Callable[[Any, Path], Evaluation]


def train(cfg: Any, run_dir: str | Path, images: Union[np.ndarray, Callable[[], np.ndarray]],
          build: Callable[[np.ndarray, int], Task], evaluation: Optional[EvaluationBuilder] = None,
          max_iters: int | None = None, resume: bool = False, progress: bool = True,
          threads: int | None = None, plots: Plots = GENERATION_PLOTS,
          init: Optional[Callable[[Task], int]] = None) -> Any:
    """Run a task end to end, holding the run folder's lock: the runtime, the images (or the
    function that loads them), the run folder, the task (`build(images, workers)`, after Paddle
    is seeded), for a new run `init(task)` if given (loads trained networks into it, returns
    their iteration, where the run begins), and its evaluation, then `fit`. Under `python -m
    paddle.distributed.launch` each worker runs this; the task is wrapped for data parallelism
    and only worker 0 writes. Returns the task."""
    configure_runtime(cfg.device, threads)
    w = init_world()  # size > 1 under python -m paddle.distributed.launch
    with run_lock(run_dir, enabled=w.rank == 0):
        images = images() if callable(images) else images
        images, run_dir = start_run(cfg, images, run_dir, resume, write=w.rank == 0)
        task = build(images, w.size)
        start = init(task) if init is not None and not resume else None
        quality = evaluation(task, run_dir) if evaluation is not None and w.rank == 0 else None
        fit(task if w.size == 1 else DataParallelTask(task, w), images, run_dir, cfg.train,
            cfg.seed, cfg.data.shuffle, max_iters, resume, plots, progress and w.rank == 0,
            quality, cfg, RunRecord if w.rank == 0 else SilentRecord, signals=w.size == 1,
            start=start)
    return task
