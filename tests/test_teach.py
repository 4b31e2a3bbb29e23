"""Losses and their gradients: signs, hand computations, and which parameters each update reaches."""
from __future__ import annotations

import dataclasses

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from ebm_vae.core.config import config_from_dict
from ebm_vae.core.models import build_models
from ebm_vae.core.teach import (NonFiniteError, decayed_lr, ebm_loss, kl_to_standard_normal,
                                make_optimizers, teach_step, vae_loss)


def _teaching(raw, gamma=2.0, lr=0.01):
    """The tiny config with Adam(lr, beta1=0.5, beta2=0.999) for both and `gamma`, and its
    networks and optimisers."""
    cfg = config_from_dict(raw)
    train = dataclasses.replace(cfg.train, lr_ebm=lr, lr_vae=lr, beta1=0.5, beta2=0.999,
                                gamma=gamma)
    cfg = dataclasses.replace(cfg, train=train)
    models = build_models(cfg.model)
    return cfg, models, make_optimizers(models, train)


class LinearEnergy(nn.Layer):
    """f(x) = sum(w * x) per sample: d f / d w = x, so the loss gradient is known by hand."""

    def __init__(self, shape):
        super().__init__()
        self.w = self.create_parameter(shape, default_initializer=nn.initializer.Constant(0.1))

    def forward(self, x):
        return (x * self.w).flatten(1).sum(axis=1)


def test_ebm_loss_gradient_is_mle_gradient():
    rng = np.random.default_rng(0)
    x_data = paddle.to_tensor(rng.normal(size=(5, 1, 2, 2)).astype("float32"))
    x_rev = paddle.to_tensor(rng.normal(size=(7, 1, 2, 2)).astype("float32"))  # chains != batch
    ebm = LinearEnergy([1, 2, 2])
    loss, f_data, f_rev = ebm_loss(ebm, x_data, x_rev)
    loss.backward()
    # d/dw [mean_j f(x~_j) - mean_i f(x_i)] = mean x~ - mean x (each batch averaged separately)
    expect = x_rev.numpy().mean(0) - x_data.numpy().mean(0)
    np.testing.assert_allclose(ebm.w.grad.numpy(), expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(loss), float(f_rev) - float(f_data), rtol=1e-6)


def test_ebm_update_raises_f_on_data_and_lowers_it_on_samples(tiny_raw):
    paddle.seed(0)
    cfg, models, (opt_ebm, _) = _teaching(tiny_raw)
    x_data = paddle.full([6, 1, 8, 8], 0.5)
    x_rev = paddle.full([5, 1, 8, 8], -0.5)
    before = float(models.ebm(x_data).mean()), float(models.ebm(x_rev).mean())
    for _ in range(3):
        loss, _, _ = ebm_loss(models.ebm, x_data, x_rev)
        opt_ebm.clear_grad()
        loss.backward()
        opt_ebm.step()
    after = float(models.ebm(x_data).mean()), float(models.ebm(x_rev).mean())
    assert after[0] > before[0] and after[1] < before[1]


def test_kl_matches_closed_form():
    mu = np.array([[0.3, -1.0], [0.0, 2.0]], np.float32)
    sigma = np.array([[0.5, 1.0], [2.0, 0.1]], np.float32)
    kl = kl_to_standard_normal(paddle.to_tensor(mu), paddle.to_tensor(np.log(sigma))).numpy()
    expect = 0.5 * (sigma ** 2 + mu ** 2 - 1 - 2 * np.log(sigma)).sum(1)
    np.testing.assert_allclose(kl, expect, rtol=1e-5)


class AffineEncoder(nn.Layer):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x.flatten(1))
        return h[:, :2], 0.5 * h[:, 2:]


class AffineDecoder(nn.Layer):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 4)

    def forward(self, z):
        return paddle.tanh(self.fc(z)).reshape([-1, 1, 2, 2])


def test_vae_loss_equals_hand_computation():
    paddle.seed(2)
    enc, dec = AffineEncoder(), AffineDecoder()
    x = paddle.uniform([3, 1, 2, 2], min=-1, max=1)
    gamma = 2.5
    paddle.seed(7)
    loss, recon, kl = vae_loss(enc, dec, x, gamma)
    paddle.seed(7)
    eps = paddle.randn([3, 2]).numpy()
    W, b = enc.fc.weight.numpy(), enc.fc.bias.numpy()
    h = x.numpy().reshape(3, 4) @ W + b
    mu, log_sigma = h[:, :2], 0.5 * h[:, 2:]
    z = mu + eps * np.exp(log_sigma)
    x_rec = np.tanh(z @ dec.fc.weight.numpy() + dec.fc.bias.numpy())
    sse = ((x_rec - x.numpy().reshape(3, 4)) ** 2).sum(1)
    kl_hand = -0.5 * (1 + 2 * log_sigma - mu ** 2 - np.exp(2 * log_sigma)).sum(1)
    np.testing.assert_allclose(float(loss), (sse + gamma * kl_hand).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(recon), sse.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(kl), kl_hand.mean(), rtol=1e-5)


def test_vae_loss_sends_no_gradient_into_theta_or_the_samples():
    enc, dec = AffineEncoder(), AffineDecoder()
    ebm = LinearEnergy([1, 2, 2])
    x0 = paddle.uniform([3, 1, 2, 2], min=-1, max=1)
    x0.stop_gradient = False
    x_rev = x0 * (1 + 0 * ebm(x0)).reshape([-1, 1, 1, 1])  # a graph into theta and x0
    loss, _, _ = vae_loss(enc, dec, x_rev, 1.0)
    loss.backward()
    assert ebm.w.grad is None and x0.grad is None
    assert enc.fc.weight.grad is not None and dec.fc.weight.grad is not None  # the encoder is trained


def _snapshot(layer):
    return [p.numpy().copy() for p in layer.parameters()]


def test_teach_step_updates_every_network_once(tiny_raw):
    paddle.seed(0)
    cfg, models, optimizers = _teaching(tiny_raw)
    before = {k: _snapshot(m) for k, m in models._asdict().items()}
    x = paddle.uniform([6, 1, 8, 8], min=-1, max=1)
    stats, x_hat, x_tilde, _ = teach_step(models, optimizers, x, cfg, 5)
    assert x_hat.shape == [5, 1, 8, 8] and x_tilde.shape == [5, 1, 8, 8]
    for k, m in models._asdict().items():
        changed = {n: not np.array_equal(a, p.numpy())
                   for a, (n, p) in zip(before[k], m.named_parameters())}
        if k == "ebm":  # a constant offset of f cancels in mean f(x~) - mean f(x): zero gradient
            assert changed.pop("head.bias") is False
        assert all(changed.values()), (k, changed)
    assert np.isfinite([stats.loss_ebm, stats.loss_vae, stats.grad_norm_ebm]).all()


def test_teach_step_refuses_nan_before_updating(tiny_raw):
    cfg, models, optimizers = _teaching(tiny_raw)
    before = _snapshot(models.ebm)
    x = paddle.full([6, 1, 8, 8], float("nan"))
    with pytest.raises(NonFiniteError, match="f\\(data\\)"):
        teach_step(models, optimizers, x, cfg, 5)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, models.ebm.parameters()))


def test_a_vae_nan_leaves_the_ebm_untouched_too(tiny_raw):
    """Both gradients are checked before either update: a non-finite VAE loss (gamma = NaN) must
    not let the EBM take its step first."""
    cfg, models, optimizers = _teaching(tiny_raw, gamma=float("nan"))
    trained = [p for m in models for p in m.parameters() if not p.stop_gradient]
    before = [p.numpy().copy() for p in trained]
    with pytest.raises(NonFiniteError, match="VAE loss"):
        teach_step(models, optimizers, paddle.zeros([6, 1, 8, 8]), cfg, 5)
    assert all(np.array_equal(a, p.numpy()) for a, p in zip(before, trained))


def test_learning_rate_decay_matches_released_code():
    assert decayed_lr(0.009, 0, 0.98, 20) == 0.009
    assert decayed_lr(0.009, 20, 0.98, 20) == pytest.approx(0.009 * 0.98)
    assert decayed_lr(1.0, 3000, 0.98, 20) == pytest.approx(0.98 ** 150)
