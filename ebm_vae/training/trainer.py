"""The training loop: one `Trainer` holds the config, the task and the run folder's record, and
runs Algorithm 1 (core/teach.py: `teach_step`, through the task's `step`) once per iteration,
for generation (training/generation.py) and completion (ebm_vae/completion/train.py) alike:

    batch = the epoch's next batch (data order of (seed, epoch))
    stats = task.step(batch)   propose, revise with Langevin, update the EBM, update the VAE
    log, collapse guard, best, grids, checkpoint, each when due

Data parallelism wraps the task (utils/parallel.py) and what the run folder receives goes
through a record (training/record.py), so the loop has no worker branches.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, NamedTuple, Optional, Protocol, Union

import numpy as np
import paddle

from ebm_vae.core.teach import NonFiniteError, decayed_lr, make_optimizers
from ebm_vae.training.checkpoints import CHECKPOINTS, latest_checkpoint, load_checkpoint_into
from ebm_vae.training.guards import CollapseError, CollapseGuard
from ebm_vae.training.record import Evaluation, Plots, RunRecord, SilentRecord, start_run
from ebm_vae.training.states import CheckpointError
from ebm_vae.training.stopping import Abandon, Interrupted, StopSignals, TrainingError
from ebm_vae.utils.parallel import DataParallelTask, World, init_world
from ebm_vae.utils.runlock import run_lock
from ebm_vae.utils.runtime import configure_runtime, math_threads, seed_all


class Task(Protocol):
    """What the trainer drives. `step` runs one iteration of Algorithm 1 on a batch
    (`core.teach.teach_step`, its steps 1-3 inside `revising`, which a second Ctrl-C may abandon)
    and returns the values to log; `evaluation` is the in-training score (None: none). A task
    that can start from trained networks (`train(..., init=)`) also has `begin_from(init)`,
    which loads them and returns their iteration."""
    models: NamedTuple
    plots: Plots
    def modules(self) -> dict[str, Any]: ...
    def set_epoch(self, epoch: int) -> dict[str, float]: ...
    def step(self, batch: np.ndarray, revising: ContextManager) -> dict[str, float]: ...
    def panels(self) -> list[tuple[str, np.ndarray]]: ...
    def evaluation(self, run_dir: Path, progress: bool) -> Optional[Evaluation]: ...


class TeachTask:
    """What every variational-MCMC-teaching task shares: the config, the three networks, one
    Adam for theta and one for (alpha, phi), and the per-epoch learning-rate decay [CODE].
    `synced` are the networks the iteration runs (data-parallel wrappers after `distribute`),
    `chains` its number of chains."""

    def __init__(self, models: Any, cfg: Any):
        self.models, self.cfg = models, cfg
        self.synced, self.chains = models, cfg.train.num_chains
        self.optimizers = make_optimizers(models, cfg.train)

    def distribute(self, workers: int, synced: Any) -> None:
        """Run as one of `workers` data-parallel workers (utils/parallel.py)."""
        self.synced = synced

    def modules(self) -> dict[str, Any]:
        return {**self.models._asdict(), "opt_ebm": self.optimizers.ebm,
                "opt_vae": self.optimizers.vae}

    def set_epoch(self, epoch: int) -> dict[str, float]:
        t = self.cfg.train
        lrs = {"lr_ebm": decayed_lr(t.lr_ebm, epoch, t.lr_decay_rate, t.lr_decay_epochs),
               "lr_vae": decayed_lr(t.lr_vae, epoch, t.lr_decay_rate, t.lr_decay_epochs)}
        self.optimizers.ebm.set_lr(lrs["lr_ebm"])
        self.optimizers.vae.set_lr(lrs["lr_vae"])
        return lrs


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


class Trainer:
    """One training run: `run` trains `task` on `images` ([N, C, H, W]) into `run_dir` under
    `cfg` (its train section, seed and data.shuffle). Data order and random draws are functions
    of (seed, epoch) and (seed, iteration), so a resumed run repeats an uninterrupted one. With
    several data-parallel workers (`world`) only worker 0 writes the run folder and no signal
    handler is installed. `evaluation`: the in-training score (`Task.evaluation`)."""

    def __init__(self, cfg: Any, task: Task, images: np.ndarray, run_dir: Path,
                 evaluation: Optional[Evaluation] = None, world: World = World()):
        self.cfg, self.task, self.images, self.run_dir = cfg, task, images, Path(run_dir)
        self.evaluation, self.world = evaluation, world
        self.per_epoch = iters_per_epoch(len(images), cfg.train.batch_size)
        self.stop = StopSignals(enabled=world.size == 1)
        self.epoch, self.order, self.lrs = -1, np.arange(0), {}

    def run(self, max_iters: Optional[int] = None, resume: bool = False, progress: bool = True,
            start: Optional[int] = None) -> int:
        """Train until `max_iters` iterations of the run (resumed ones included; default: all
        `train.epochs`); returns the final iteration count. `resume`: continue from the newest
        checkpoint, which must fit the networks exactly (only then is the config written to
        config.yaml); a run without one starts again from 0. `start`: the task holds trained
        networks of that iteration (`Task.begin_from`), where this run begins, its first
        checkpoint written at once. Non-finite values, SIGINT and SIGTERM save the state after
        the last completed iteration."""
        t = self.cfg.train
        planned = self.per_epoch * t.epochs
        self.total = planned if max_iters is None else min(max_iters, planned)
        self._begin(resume, start, progress)
        guard = CollapseGuard(t.collapse_factor, t.collapse_window, t.collapse_patience,
                              self.record.rows)
        try:
            with self.stop:
                while self.it < self.total and self.stop.signum is None:
                    batch, began = self.batch(), time.perf_counter()
                    stats = self.iteration(batch)  # Algorithm 1: propose, revise, update f, q and g
                    self.it += 1
                    self.after(stats, time.perf_counter() - began, guard)
                if self.stop.signum is not None:
                    self._stopped()
        finally:
            self.record.close()
        return self.it

    def batch(self) -> np.ndarray:
        """The next batch: at an epoch's start its learning rates and data order are set."""
        if self.it // self.per_epoch != self.epoch:
            self.epoch = self.it // self.per_epoch
            self.lrs = self.task.set_epoch(self.epoch)
            self.order = epoch_order(len(self.images), self.cfg.data.shuffle, self.cfg.seed,
                                     self.epoch)
        b, size = self.it % self.per_epoch, self.cfg.train.batch_size
        return self.images[self.order[b * size:(b + 1) * size]]

    def iteration(self, batch: np.ndarray) -> dict[str, float]:
        """Iteration it + 1: the task's `step` (one `teach_step`) with Paddle seeded from (seed,
        it). Both halves check their values before any update, so on a non-finite value, or a
        second signal during the revision, the state after iteration `it` is saved (its buffers
        put back) and the run stops."""
        it, buffers = self.it, _buffers(self.task.models)
        seed_all(iteration_seed(self.cfg.seed, it))
        try:
            return self.task.step(batch, self.stop.abandonable())
        except NonFiniteError as err:
            _restore(buffers)
            path = self.record.checkpoint(it, self.task.modules(),
                                          {"stopped": f"iteration {it + 1}: {err}"})
            raise TrainingError(_nonfinite_message(err, it, self.epoch, path)) from err
        except Abandon:
            _restore(buffers)
            path = self.record.checkpoint(it, self.task.modules())
            raise Interrupted(self.stop.signum, it, path, self.run_dir) from None
        except MemoryError as err:  # Paddle's ResourceExhausted: chains or batch too large
            why = (str(err).strip().splitlines() or ["out of memory"])[0].rstrip(".")
            raise TrainingError(f"iteration {it + 1}: {why}. Training stopped; the run's "
                                "checkpoints are unchanged. Lower train.num_chains or "
                                "train.batch_size (--resume DIR --set ...)") from None

    def after(self, stats: dict[str, float], seconds: float, guard: CollapseGuard) -> None:
        """The iteration's row (with the evaluation when due), the collapse guard, the best
        state, then log row, progress, grids and checkpoint, each when due."""
        it, ev = self.it, self.evaluation
        row = {"iteration": it, "epoch": self.epoch, **stats, **self.lrs, "sec_per_iter": seconds}
        due = ev is not None and (it % ev.every == 0 or it == self.total)
        if ev is not None:  # NaN when not due: the CSV's columns are fixed
            row.update(ev.run() if due else dict.fromkeys(ev.keys, math.nan))
        runaway = guard.check(it, stats)
        if runaway is not None:
            self.record.row(row)
            raise CollapseError(_collapse_message(runaway, self.run_dir, self.saved, self.record))
        if due:
            self.record.offer_best(it, self.task.modules(), row)
        if self._write(row, due):
            self.saved = it

    def _write(self, row: dict[str, float], evaluated: bool) -> bool:
        """Log row, progress, grids and checkpoint of the iteration `row` ends, each when due
        (`train.*_every`); True if a checkpoint was written."""
        t, it = self.cfg.train, self.it
        last = it == self.total
        if it % t.log_every == 0 or last or evaluated:
            self.record.row(row)
        self.record.progress(it, last, epoch=row["epoch"], ebm=row["loss_ebm"],
                             vae=row["loss_vae"])
        if it % t.sample_every == 0 or last:
            self.record.grids(it, self.task.panels())
        if it % t.checkpoint_every == 0 or last or (t.keep_every > 0 and it % t.keep_every == 0):
            self.record.checkpoint(it, self.task.modules())
            return True
        return False

    def _begin(self, resume: bool, start: Optional[int], progress: bool) -> None:
        """Open the run's record; set the first iteration and that of the newest checkpoint."""
        self.saved = self._resume() if resume else None
        self.it = (self.saved or 0) if resume else (start or 0)
        record_type = RunRecord if self.world.rank == 0 else SilentRecord
        self.record = record_type(self.run_dir, self.cfg.train, self.task.plots, self.evaluation,
                                  self.total, self.it if resume else None, progress, self.it)
        if resume:
            self.record.note(
                f"resuming from iteration {self.saved} (checkpoint "
                f"{latest_checkpoint(self.run_dir)}); the run stops at iteration {self.total}"
                if self.saved is not None else f"warning: {self.run_dir} has no checkpoint "
                "yet: starting again from iteration 0")
            self.record.config(self.cfg)  # after the checkpoint loaded into the networks
        elif start is not None:  # a --resume before the next checkpoint goes on from these weights
            self.saved = self.it
            self.record.checkpoint(self.it, self.task.modules())

    def _resume(self) -> Optional[int]:
        """Load the run's newest checkpoint into the task; its iteration, None if there is none."""
        if latest_checkpoint(self.run_dir) is None:
            return None
        try:
            return load_checkpoint_into(self.run_dir, self.task.modules())
        except CheckpointError as err:
            raise TrainingError(f"cannot resume: {err}") from err

    def _stopped(self) -> None:
        """After a signal: save the state (unless just saved) and stop."""
        path = (self.record.checkpoint(self.it, self.task.modules()) if self.saved != self.it
                else latest_checkpoint(self.run_dir) or self.run_dir / CHECKPOINTS)
        raise Interrupted(self.stop.signum, self.it, path, self.run_dir)


def train(cfg: Any, run_dir: str | Path, images: Union[np.ndarray, Callable[[], np.ndarray]],
          build: Callable[[np.ndarray, int], Task], max_iters: int | None = None,
          resume: bool = False, progress: bool = True, init: str | Path | None = None) -> Any:
    """Run a task end to end, holding the run folder's lock: the runtime (`cfg.device`, the math
    threads configured so far, see `runtime.math_threads`), the images (or the function that
    loads them), the run folder, the task (`build(images, workers)`, after Paddle is seeded),
    for a new run from trained networks `task.begin_from(init)` (their iteration is where the
    run begins), its evaluation, then `Trainer.run`. Under `python -m
    paddle.distributed.launch` each worker runs this; the task is wrapped for data parallelism
    and only worker 0 writes. Returns the task."""
    configure_runtime(cfg.device, math_threads())
    w = init_world()  # size > 1 under python -m paddle.distributed.launch
    with run_lock(run_dir, enabled=w.rank == 0):
        images = images() if callable(images) else images
        images, run_dir = start_run(cfg, images, run_dir, resume, write=w.rank == 0)
        task = build(images, w.size)
        start = task.begin_from(init) if init is not None and not resume else None
        evaluation = task.evaluation(run_dir, progress) if w.rank == 0 else None
        trainer = Trainer(cfg, task if w.size == 1 else DataParallelTask(task, w), images,
                          run_dir, evaluation, w)
        trainer.run(max_iters, resume, progress and w.rank == 0, start)
    return task
