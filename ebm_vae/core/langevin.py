"""Langevin revision of samples under the EBM (docs/method.md §2, eq. L).

    x_{t+1} = x_t - (delta^2 / 2) * (x_t / sigma_ref^2 - df(x_t)/dx) + delta * U_t,   U_t ~ N(0, I)

samples p(x) ∝ exp(f(x)) * N(x; 0, sigma_ref^2 I) as delta -> 0. `ref_sigma=None` drops the
reference term; `noise=False` is the released code's deterministic variant; `clamp=True` projects
every step back onto the data range [-1, 1] (a stabiliser [OURS], docs/method.md §8).
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Optional

import paddle
import paddle.nn as nn

EnergyFn = Callable[[paddle.Tensor], paddle.Tensor]


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


def energy_grad(f: EnergyFn, x: paddle.Tensor, chunk_size: Optional[int] = None) -> paddle.Tensor:
    """d f(x_i) / d x_i for every sample (the gradient of the batch sum), `chunk_size` at a time."""
    grads = []
    for xc in (paddle.split(x, _chunks(x.shape[0], chunk_size)) if chunk_size else [x]):
        xc = xc.detach()
        xc.stop_gradient = False
        grads.append(paddle.grad(f(xc).sum(), xc)[0])
    return grads[0] if len(grads) == 1 else paddle.concat(grads)


def _chunks(n: int, size: int) -> list[int]:
    return [size] * (n // size) + ([n % size] if n % size else [])


def langevin_step(f: EnergyFn, x: paddle.Tensor, step_size: float, ref_sigma: Optional[float],
                  noise: bool, chunk_size: Optional[int] = None,
                  grad_rms: Optional[list[float]] = None, clamp: bool = False) -> paddle.Tensor:
    """One step of eq. (L), then onto [-1, 1] if `clamp`; appends the root-mean-square of df/dx over all pixels to `grad_rms`
    (a host sync: pass it on the steps whose value is wanted only)."""
    drift = energy_grad(f, x, chunk_size)
    if grad_rms is not None:
        grad_rms.append(math.sqrt(float((drift ** 2).mean())))
    if ref_sigma is not None:
        drift = drift - x / ref_sigma ** 2  # Gaussian reference term of eq. (L)
    x = x + 0.5 * step_size ** 2 * drift  # eq. (L): x - (delta^2/2)(x/sigma^2 - df/dx)
    if noise:
        x = x + step_size * paddle.randn(x.shape, dtype=x.dtype)  # eq. (L): + delta * U
    if clamp:
        x = x.clip(-1.0, 1.0)  # [OURS] stay where the EBM is trained (the data range)
    return x.detach()


def langevin(ebm: nn.Layer, x: paddle.Tensor, steps: int, step_size: float,
             ref_sigma: Optional[float] = 0.016, noise: bool = True,
             chunk_size: Optional[int] = None, grad_rms: Optional[list[float]] = None,
             clamp: bool = False) -> paddle.Tensor:
    """Revise `x` by `steps` steps of eq. (L) under the EBM f = `ebm`; returns a detached tensor.

    Chunking splits only the gradient computation, so results do not depend on `chunk_size`.
    `grad_rms`, if a list, receives the RMS of df/dx at the last step (a diagnostic; no random draws).
    """
    x = x.detach()
    with frozen(ebm):
        for t in range(steps):
            x = langevin_step(ebm, x, step_size, ref_sigma, noise, chunk_size,
                              grad_rms if t == steps - 1 else None, clamp)
    return x
