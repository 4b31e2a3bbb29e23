"""The flattened-bias convolutions (ebm_vae/core/layers.py) give Paddle's own layers' numbers
bit for bit: forward, input gradient and parameter gradients, and a seeded Langevin chain."""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from ebm_vae.core import layers
from ebm_vae.core.config import load_config
from ebm_vae.core.langevin import langevin
from ebm_vae.core.models import build_models


def _twins(fast_cls, plain_cls, *args, **kwargs):
    paddle.seed(3)
    fast = fast_cls(*args, **kwargs)
    plain = plain_cls(*args, **kwargs)
    plain.set_state_dict(fast.state_dict())
    for p in fast.parameters():  # a non-zero bias, so the addition is exercised
        if p.name.endswith("b_0") or p.shape == [p.shape[0]]:
            p.set_value(paddle.randn(p.shape))
    plain.set_state_dict(fast.state_dict())
    return fast, plain


@pytest.mark.parametrize("kind, args, kwargs, shape", [
    ("conv", (3, 8, 3, 1), {"padding": "SAME"}, [4, 3, 9, 9]),
    ("conv", (5, 6, 4, 2), {"padding": 1}, [2, 5, 8, 8]),
    ("conv", (5, 6, 4, 2), {"padding": "SAME"}, [2, 5, 7, 7]),
    ("conv", (4, 2, 3, 1), {"padding": 1, "bias_attr": False}, [2, 4, 6, 6]),
    ("deconv", (6, 3, 3, 2), {"padding": [0, 1, 0, 1], "output_padding": 0}, [2, 6, 16, 16]),
    ("deconv", (6, 4, 4, 2), {"padding": 1}, [3, 6, 5, 5]),
])
def test_fast_bias_layers_equal_paddle_layers_bit_for_bit(kind, args, kwargs, shape):
    pair = (layers.Conv2D, nn.Conv2D) if kind == "conv" else (layers.Conv2DTranspose,
                                                              nn.Conv2DTranspose)
    fast, plain = _twins(*pair, *args, **kwargs)
    x = paddle.randn(shape)
    outs, grads = [], []
    for layer in (fast, plain):
        xi = x.detach()
        xi.stop_gradient = False
        y = layer(xi)
        (y * y).sum().backward()
        outs.append(y.numpy())
        grads.append([xi.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()])
    np.testing.assert_array_equal(outs[0], outs[1])
    assert len(grads[0]) == len(grads[1])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_a_seeded_langevin_chain_is_the_same_as_with_paddle_layers(monkeypatch):
    cfg = load_config("experiments/cifar10_cpu.yaml")
    paddle.seed(0)
    models = build_models(cfg.model)
    x0 = paddle.randn([3, 3, 32, 32]) * 0.5
    runs = []
    for plain in (False, True):
        if plain:  # the same modules, Paddle's own forward
            monkeypatch.setattr(layers.Conv2D, "forward", nn.Conv2D.forward)
            monkeypatch.setattr(layers.Conv2DTranspose, "forward", nn.Conv2DTranspose.forward)
        paddle.seed(1)
        proposals = models.decoder(paddle.randn([3, cfg.model.latent_dim]))
        paddle.seed(2)
        runs.append((proposals.numpy(), langevin(models.ebm, x0, cfg.langevin, steps=10).numpy()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
