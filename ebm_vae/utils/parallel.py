"""Data-parallel training with paddle.distributed: one worker process per GPU (or per CPU worker).

Everything about workers lives here; Algorithm 1 (core/teach.py, core/langevin.py) does not know
about them. Each worker runs Algorithm 1 unchanged on its equal shard: batch_size / W data images
and num_chains / W chains of its own. The three networks are wrapped in `paddle.DataParallel`,
whose backward pass averages the parameter gradients over the workers; with equal shards that
average is the gradient of the global means (mean f(x_tilde) - mean f(data), the mean negative
ELBO), so the update is the single-process update on the global batch and chains.

Two things paddle.DataParallel does not do by itself, handled by `Synced`:
- Langevin calls the EBM many times with its parameters frozen and takes gradients w.r.t. the
  input only. Through DataParallel's reducer that fails ("parameter ... has been ready before",
  checked with two gloo workers), so a frozen layer is called without the reducer.
- A NaN must stop every worker at the same check, or the others would wait forever in the next
  all-reduce. The checks in core/teach.py follow the gradient all-reduce; a non-finite network
  output on any worker makes that worker's gradients NaN, so every worker's gradient is NaN.

ebm_loss's two forward calls (data, then revised samples) before one backward work with the
reducer (find_unused_parameters=False): tests/test_distributed.py compares the averaged
gradient with the single-process one.
"""
from __future__ import annotations

import os
from typing import Any, ContextManager, NamedTuple, TypeVar

import numpy as np
import paddle
import paddle.distributed as dist

M = TypeVar("M", bound=tuple)


class World(NamedTuple):
    """This process's rank among `size` workers (rank 0 writes the run folder)."""
    rank: int = 0
    size: int = 1


def init_world() -> World:
    """Join the workers started by `python -m paddle.distributed.launch` (CPU: gloo, GPU: NCCL;
    select the device first); a plain process is World(0, 1)."""
    if int(os.environ.get("PADDLE_TRAINERS_NUM", "1")) > 1 and not dist.is_initialized():
        dist.init_parallel_env()
    return world()


def world() -> World:
    """The current rank and worker count; World(0, 1) unless `init_world` joined workers."""
    if not dist.is_initialized():
        return World()
    return World(dist.get_rank(), dist.get_world_size())


def check_shards(batch_size: int, num_chains: int, num_images: int, workers: int) -> None:
    """Raise ValueError unless every worker gets an equal, non-empty shard of every batch: the
    batch and the chains divisible by `workers`, and an epoch's last partial batch (cut to a
    multiple of `workers` by `shard`) not empty."""
    if workers == 1:
        return
    if batch_size % workers or num_chains % workers:
        raise ValueError(f"{workers} workers need equal shards: train.batch_size ({batch_size}) "
                         f"and train.num_chains ({num_chains}) must be multiples of {workers}")
    last = num_images % batch_size
    if 0 < last < workers:
        raise ValueError(f"{workers} workers need equal shards: the last batch of an epoch has "
                         f"{last} image(s) ({num_images} images, batch {batch_size}); change "
                         "data.limit or train.batch_size")


def shard(batch: np.ndarray, w: World) -> np.ndarray:
    """Worker `w.rank`'s contiguous rows: len(batch) // w.size of them. A batch that does not
    divide (only an epoch's last one, see `check_shards`) loses its last len % size rows."""
    k = len(batch) // w.size
    return batch[w.rank * k:(w.rank + 1) * k]


def seed_worker(w: World) -> None:
    """With several workers, reseed Paddle from (the current, per-iteration stream, rank), so each
    worker draws its own chains, noise and dropout masks. One process: nothing changes."""
    if w.size > 1:
        shared = int(paddle.randint(0, 2 ** 31 - 1, [1]).numpy()[0])
        paddle.seed(int(np.random.SeedSequence([shared, w.rank]).generate_state(1)[0] >> 1))


def _poison_if_non_finite(out: paddle.Tensor) -> None:
    """Make the gradient flowing back from `out` NaN if `out` holds a NaN or inf (else g + 0)."""
    if isinstance(out, paddle.Tensor) and not out.stop_gradient:
        total = out.detach().sum()
        out.register_hook(lambda g: g + 0 * total)


class Synced(paddle.DataParallel):
    """paddle.DataParallel that a frozen layer (Langevin) bypasses, and whose non-finite outputs
    poison the gradients (see the module docstring)."""

    def forward(self, *inputs):
        if all(p.stop_gradient for p in self._layers.parameters()):
            return self._layers(*inputs)  # Langevin: d f / d x only, no parameter gradient to sync
        out = super().forward(*inputs)
        if paddle.is_grad_enabled():
            for t in out if isinstance(out, (tuple, list)) else [out]:
                _poison_if_non_finite(t)
        return out


def data_parallel(models: M, w: World) -> M:
    """`models` (a NamedTuple of layers) with each layer wrapped in `Synced`: its gradients are
    averaged over the workers. Wrapping broadcasts worker 0's parameters and buffers, so all
    workers start alike. One process: `models` itself."""
    return models if w.size == 1 else type(models)(*(Synced(m) for m in models))


def mean_over_workers(t: paddle.Tensor, w: World) -> paddle.Tensor:
    """Elementwise mean of `t` over the workers (`t` itself on one process)."""
    if w.size == 1:
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / w.size


def mean_values(values: dict[str, float], w: World) -> dict[str, float]:
    """Each value's mean over the workers (the values themselves on one process)."""
    if w.size == 1:
        return values
    means = mean_over_workers(paddle.to_tensor(list(values.values()), dtype="float64"), w)
    return dict(zip(values, means.numpy().tolist()))


def average_batch_norm(layers: tuple, w: World) -> None:
    """Batch-norm running statistics (`_mean`, `_variance` of Paddle's BatchNorm layers) set to
    their mean over the workers, so every worker keeps the same state (the mean is the global
    one; the variance is the mean of the per-worker variances). One process: nothing changes."""
    for layer in layers if w.size > 1 else []:
        for m in layer.sublayers(include_self=True):
            if hasattr(m, "_mean") and hasattr(m, "_variance"):
                for stat in (m._mean, m._variance):
                    stat.set_value(mean_over_workers(stat, w))


class DataParallelTask:
    """A training task run by one of several workers, data parallelism kept outside the algorithm
    (as nanoGPT keeps DDP out of its model): each worker draws its own chains (`seed_worker`),
    takes its equal shard of the batch and its share of the chains, and runs the task on networks
    whose gradients are averaged over the workers (`data_parallel`); then the batch-norm
    statistics and the logged values are averaged (values named *grad_norm* are already global)."""

    def __init__(self, task: Any, w: World):
        self.task, self.w, self.models, self.plots = task, w, task.models, task.plots
        task.distribute(w.size, data_parallel(task.models, w))

    def modules(self) -> dict[str, Any]:
        return self.task.modules()

    def set_epoch(self, epoch: int) -> dict[str, float]:
        return self.task.set_epoch(epoch)

    def panels(self) -> list:
        return self.task.panels()

    def step(self, batch: np.ndarray, revising: ContextManager) -> dict[str, float]:
        seed_worker(self.w)
        stats = self.task.step(shard(batch, self.w), revising)
        average_batch_norm(self.models, self.w)
        return {**stats, **mean_values({k: v for k, v in stats.items() if "grad_norm" not in k},
                                       self.w)}
