"""Data-parallel training with paddle.distributed: one worker process per GPU (or per CPU worker).

Each worker takes contiguous rows of the data batch and of the Langevin chains. Its losses are its
share of the global means (its mean times its fraction of the rows), so the SUM of the workers'
gradients is the gradient of the global losses for any split, equal or not. Langevin's input
gradients stay local; only the parameter gradients of the two updates are summed.

Random draws do not depend on the number of workers: every worker draws z, the Langevin noise
and the reparameterisation noise for ALL chains from the shared per-iteration seed and keeps its
rows. Two things do depend on it: batch-norm statistics (computed over each worker's own chains)
and the encoder's dropout masks (drawn per worker from its own stream, seeded by rank).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

import numpy as np
import paddle
import paddle.distributed as dist


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


def broadcast_parameters(layers: list[paddle.nn.Layer]) -> None:
    """Copy worker 0's parameters and buffers to every worker: all start from the same state."""
    for layer in layers:
        for t in layer.parameters() + layer.buffers():
            dist.broadcast(t, src=0)


def shard(n: int, w: World) -> slice:
    """Rank `w.rank`'s contiguous rows of n: sizes differ by at most one, larger ones first."""
    base, extra = divmod(n, w.size)
    start = w.rank * base + min(w.rank, extra)
    return slice(start, start + base + (w.rank < extra))


def all_sum(t: paddle.Tensor) -> paddle.Tensor:
    """Elementwise sum of `t` over the workers (a new tensor; NaN/inf propagate)."""
    t = t.detach().clone()
    dist.all_reduce(t)
    return t


@dataclass(frozen=True)
class Part:
    """One worker's part of an iteration of Algorithm 1: its rows of the data batch and of the
    chains, and their fractions of the batch and of the chains (the weights of its means).
    On a single process (`World(0, 1)`) it is the whole batch, the shares are 1 and every
    collective below is the identity, so the same code serves both."""
    world: World
    data: slice
    chains: slice
    num_chains: int
    data_share: float
    chain_share: float

    @classmethod
    def of(cls, batch_size: int, num_chains: int, w: World) -> "Part":
        if min(batch_size, num_chains) < w.size:
            raise ValueError(f"{w.size} workers need at least {w.size} data images and chains "
                             f"per iteration, got {batch_size} and {num_chains}")
        data, chains = shard(batch_size, w), shard(num_chains, w)
        return cls(w, data, chains, num_chains, (data.stop - data.start) / batch_size,
                   (chains.stop - chains.start) / num_chains)

    @property
    def parallel(self) -> bool:
        return self.world.size > 1

    @property
    def local_chains(self) -> int:
        return self.chains.stop - self.chains.start

    def randn(self, shape: list[int]) -> paddle.Tensor:
        """N(0, I) of `shape` for this worker's chains: its rows of the draw for all chains."""
        return paddle.randn([self.num_chains, *shape[1:]])[self.chains]

    def sum(self, t: paddle.Tensor) -> paddle.Tensor:
        """`t` summed elementwise over the workers (`t` itself on a single process)."""
        return all_sum(t) if self.parallel else t

    def total(self, value: paddle.Tensor) -> float:
        """A scalar summed over the workers (every worker gets the same number)."""
        return float(self.sum(value.reshape([1]).astype("float32")).numpy()[0])

    def sum_grads(self, params: list) -> None:
        """Replace each parameter's gradient by its sum over the workers (frozen parameters have
        none, on every worker alike)."""
        for p in params if self.parallel else []:
            if p.grad is not None:
                dist.all_reduce(p.grad)

    def average_batch_norm(self, layer: paddle.nn.Layer) -> None:
        """Batch-norm running statistics (`_mean`, `_variance` of Paddle's BatchNorm layers): the
        chain-weighted mean over the workers, so every worker keeps the same state (the mean is
        the global one; the variance is the mean of the per-worker variances)."""
        for m in layer.sublayers(include_self=True) if self.parallel else []:
            if hasattr(m, "_mean") and hasattr(m, "_variance"):
                for stat in (m._mean, m._variance):
                    stat.set_value(all_sum(stat * self.chain_share))

    def own_draws(self, fn: Callable) -> Callable:
        """`fn` run on this worker's own random stream (seeded from the shared stream and the
        rank), leaving the shared stream as it was: for draws made inside layers (dropout)."""
        if not self.parallel:
            return fn

        def wrapped(*args):
            with self._own_stream():
                return fn(*args)
        return wrapped

    @contextlib.contextmanager
    def _own_stream(self) -> Iterator[None]:
        state = paddle.get_rng_state()
        shared = int(paddle.randint(0, 2 ** 31 - 1, [1]).numpy()[0])
        own = np.random.SeedSequence([shared, self.world.rank]).generate_state(1)[0] >> 1
        paddle.seed(int(own))
        try:
            yield
        finally:
            paddle.set_rng_state(state)
