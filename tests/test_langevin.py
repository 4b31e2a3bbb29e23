"""Langevin revision (eq. L) against a quadratic energy whose stationary law is known exactly."""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from ebm_vae.core.config import LangevinConfig
from ebm_vae.core.langevin import energy_grad, langevin


def chain(f: nn.Layer, x: paddle.Tensor, **settings) -> paddle.Tensor:
    """`langevin` with the LangevinConfig of `settings` (steps, step_size, ref_sigma, ...)."""
    return langevin(f, x, LangevinConfig(**settings))


class Quadratic(nn.Layer):
    """f(x) = -||x - mu||^2 / (2 s^2) per sample, with mu a (trainable) parameter."""

    def __init__(self, mu: float, s: float):
        super().__init__()
        self.mu = self.create_parameter([1], default_initializer=nn.initializer.Constant(mu))
        self.s = s

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return -(((x - self.mu) ** 2) / (2 * self.s ** 2)).flatten(1).sum(axis=1)


def stationary(mu: float, s: float, ref_sigma: float | None, delta: float) -> tuple[float, float]:
    """Exact stationary mean and variance of the discretised chain (docs/method.md §2).

    Precision lam = 1/s^2 + 1/ref^2, mean mu (1/s^2)/lam; the Euler scheme x' = x - (d^2/2) lam (x - m)
    + d U has variance 1 / (lam (1 - d^2 lam / 4)), which -> 1/lam as d -> 0.
    """
    lam = 1 / s ** 2 + (1 / ref_sigma ** 2 if ref_sigma else 0.0)
    return mu / s ** 2 / lam, 1 / (lam * (1 - delta ** 2 * lam / 4))


@pytest.mark.parametrize("ref_sigma", [2.0, None])
def test_quadratic_energy_reaches_known_gaussian(ref_sigma):
    paddle.seed(0)
    mu, s, delta, n = 2.0, 1.0, 0.2, 4000
    # the noise alone: one step under a flat energy (s = 1e6: a gradient of ~1e-12, no reference
    # term) moves x by delta U, U ~ N(0, I). Uniform [0, 1) noise (a bug of the earlier Paddle
    # ports: mean 1/2, variance 1/12) or a wrong scale fails here.
    u = (chain(Quadratic(0.0, 1e6), paddle.full([n, 1, 1, 1], 3.0), steps=1, step_size=delta,
                  ref_sigma=None, noise=True).numpy() - 3.0) / delta
    assert abs(u.mean()) < 4 / np.sqrt(n) and abs(u.var() - 1.0) < 4 * np.sqrt(2 / n)
    x0 = paddle.zeros([n // 4, 1, 2, 2])
    x = chain(Quadratic(mu, s), x0, steps=600, step_size=delta, ref_sigma=ref_sigma, noise=True).numpy()
    mean, var = stationary(mu, s, ref_sigma, delta)
    se_mean, se_var = np.sqrt(var / n), var * np.sqrt(2 / n)
    # a missing 1/2 in the drift roughly halves the stationary variance; uniform noise shifts the
    # mean by 1 / (delta lam): both fail here
    assert abs(x.mean() - mean) < 4 * se_mean
    assert abs(x.var() - var) < 4 * se_var


def test_noise_free_chain_is_gradient_ascent_to_the_mode():
    mean, _ = stationary(2.0, 1.0, 2.0, 0.2)
    x = chain(Quadratic(2.0, 1.0), paddle.zeros([3, 1, 2, 2]), steps=800, step_size=0.2,
                 ref_sigma=2.0, noise=False).numpy()
    np.testing.assert_allclose(x, mean, atol=1e-4)


def test_one_step_matches_the_equation():
    paddle.seed(5)
    x0 = paddle.randn([4, 1, 3, 3])
    delta, ref, mu = 0.3, 0.7, 0.5
    paddle.seed(11)
    out = chain(Quadratic(mu, 1.0), x0, steps=1, step_size=delta, ref_sigma=ref, noise=True)
    paddle.seed(11)
    u = paddle.randn(x0.shape).numpy()
    x = x0.numpy()
    grad = -(x - mu)  # d f / d x for s = 1
    expect = x - delta ** 2 / 2 * (x / ref ** 2 - grad) + delta * u  # eq. (L)
    np.testing.assert_allclose(out.numpy(), expect, rtol=1e-5, atol=1e-6)


def test_chunking_does_not_change_the_result():
    x0 = paddle.randn([7, 1, 2, 2])
    paddle.seed(1)
    a = chain(Quadratic(1.0, 1.0), x0, steps=5, step_size=0.1, chunk_size=None).numpy()
    paddle.seed(1)
    b = chain(Quadratic(1.0, 1.0), x0, steps=5, step_size=0.1, chunk_size=3).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_no_gradient_reaches_the_ebm_parameters():
    ebm = Quadratic(1.0, 1.0)
    x0 = paddle.randn([4, 1, 2, 2])
    x0.stop_gradient = False
    out = chain(ebm, x0, steps=3, step_size=0.1)
    assert ebm.mu.grad is None
    assert not ebm.mu.stop_gradient  # flag restored for the EBM's own update
    assert out.stop_gradient  # the revised samples are constants


def test_energy_grad_is_per_sample_gradient():
    x = paddle.to_tensor(np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2))
    g = energy_grad(Quadratic(1.0, 2.0), x, chunk_size=1).numpy()
    np.testing.assert_allclose(g, -(x.numpy() - 1.0) / 4.0, rtol=1e-6)


def test_clamp_keeps_chains_in_the_data_range_and_is_otherwise_the_same_step():
    """Under an energy whose mode is at 5, unclamped chains leave [-1, 1]; clamped chains sit at the
    boundary. Inside the range one clamped step equals the plain step (the clip is then a no-op)."""
    x0 = paddle.zeros([6, 1, 2, 2])
    free = chain(Quadratic(5.0, 1.0), x0, steps=200, step_size=0.3, ref_sigma=None,
                    noise=False).numpy()
    kept = chain(Quadratic(5.0, 1.0), x0, steps=200, step_size=0.3, ref_sigma=None,
                    noise=False, clamp=True).numpy()
    assert free.min() > 4.9
    np.testing.assert_array_equal(kept, np.ones_like(kept))
    paddle.seed(3)
    a = chain(Quadratic(0.0, 1.0), x0, steps=1, step_size=0.01).numpy()
    paddle.seed(3)
    b = chain(Quadratic(0.0, 1.0), x0, steps=1, step_size=0.01, clamp=True).numpy()
    np.testing.assert_array_equal(a, b)
