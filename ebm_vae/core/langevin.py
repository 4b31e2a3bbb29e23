"""Langevin revision of samples under the EBM (docs/method.md §2, eq. L).

    x_{t+1} = x_t - (delta^2 / 2) * (x_t / sigma_ref^2 - df(x_t)/dx) + delta * U_t,   U_t ~ N(0, I)

samples p(x) ∝ exp(f(x)) * N(x; 0, sigma_ref^2 I) as delta -> 0. `ref_sigma=None` drops the
reference term; `noise=False` is the released code's deterministic variant; `clamp=True` projects
every step back onto the data range [-1, 1] (a stabiliser [OURS], docs/method.md §8).
A condition (image completion) is passed as extra inputs of f, `cond`, fixed along the chain, and
a `project` that keeps every step on the support of p(x | c) (the visible pixels).
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Optional

import paddle
import paddle.nn as nn

from ebm_vae.core.compiled_grad import GradFn, compiled_gradient
from ebm_vae.core.config import LangevinConfig

EnergyFn = Callable[..., paddle.Tensor]  # f(x, *cond) -> [N] energies
Project = Callable[[paddle.Tensor], paddle.Tensor]


@contextlib.contextmanager
def frozen(layer: nn.Layer) -> Iterator[None]:
    """Stop gradients into `layer`'s parameters (no graph is built into theta; saves the weight
    gradients of every backward pass), restoring each parameter's flag afterwards."""
    params = layer.parameters()
    flags = [p.stop_gradient for p in params]
    for p in params:
        p.stop_gradient = True
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.stop_gradient = flag


def energy_grad(f: EnergyFn, x: paddle.Tensor, chunk_size: Optional[int] = None,
                cond: tuple[paddle.Tensor, ...] = ()) -> paddle.Tensor:
    """d f(x_i, *cond_i) / d x_i for every sample (the gradient of the batch sum), `chunk_size`
    samples at a time (each with its rows of `cond`)."""
    n = x.shape[0]
    size = chunk_size or n
    grads = []
    for start in range(0, n, size):
        xc = x[start:start + size].detach()
        xc.stop_gradient = False
        grads.append(paddle.grad(f(xc, *(c[start:start + size] for c in cond)).sum(), xc)[0])
    return grads[0] if len(grads) == 1 else paddle.concat(grads)


def langevin_step(grad: GradFn, x: paddle.Tensor, lv: LangevinConfig,
                  project: Optional[Project] = None, grad_rms: Optional[list[float]] = None
                  ) -> paddle.Tensor:
    """One step of eq. (L) with df/dx = `grad(x)`, then onto [-1, 1] if `lv.clamp`, then
    `project`; appends the root-mean-square of df/dx over all pixels to `grad_rms` (a host sync:
    pass it on the steps whose value is wanted only)."""
    drift = grad(x)
    if grad_rms is not None:
        grad_rms.append(math.sqrt(float((drift ** 2).mean())))
    if lv.ref_sigma is not None:
        drift = drift - x / lv.ref_sigma ** 2  # Gaussian reference term of eq. (L)
    x = x + 0.5 * lv.step_size ** 2 * drift  # eq. (L): x - (delta^2/2)(x/sigma^2 - df/dx)
    if lv.noise:
        x = x + lv.step_size * paddle.randn(x.shape, dtype=x.dtype)  # eq. (L): + delta * U
    if lv.clamp:
        x = x.clip(-1.0, 1.0)  # [OURS] stay where the EBM is trained (the data range)
    return (x if project is None else project(x)).detach()


def input_gradient(ebm: nn.Layer, lv: LangevinConfig, cond: tuple[paddle.Tensor, ...] = ()
                   ) -> GradFn:
    """x -> df(x, *cond)/dx under the EBM's current weights, `lv.chunk_size` chains at a time:
    by the compiled oneDNN path where `lv.gradient` selects it (core/compiled_grad.py), else by
    autograd."""
    autograd = lambda x: energy_grad(ebm, x, lv.chunk_size, cond)  # noqa: E731
    compiled = None if cond else compiled_gradient(ebm, lv.gradient, autograd)
    size = lv.chunk_size
    if compiled is None:
        return autograd
    return lambda x: compiled(x) if not size or size >= x.shape[0] else paddle.concat(
        [compiled(x[start:start + size]) for start in range(0, x.shape[0], size)])


def langevin(ebm: nn.Layer, x: paddle.Tensor, lv: LangevinConfig, steps: Optional[int] = None,
             cond: tuple[paddle.Tensor, ...] = (), project: Optional[Project] = None,
             grad_rms: Optional[list[float]] = None) -> paddle.Tensor:
    """Revise `x` by `steps` (default `lv.steps`) steps of eq. (L) under the EBM f = `ebm`, called
    as ebm(x, *cond); returns a detached tensor. `project` is applied to x first and after every
    step (completion: the visible pixels stay those of the condition).

    Chunking splits only the gradient computation, so results do not depend on `lv.chunk_size`.
    `grad_rms`, if a list, receives the RMS of df/dx at the last step (a diagnostic; no random draws).
    """
    steps = lv.steps if steps is None else steps
    x = (x if project is None else project(x)).detach()
    with frozen(ebm):
        grad = input_gradient(ebm, lv, cond)
        for t in range(steps):
            x = langevin_step(grad, x, lv, project, grad_rms if t == steps - 1 else None)
    return x
