"""Every architecture's shapes, initialisation and batch-norm mode."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from ebm_vae.config import load_config
from ebm_vae.models import build_models


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_output_shapes(name):
    cfg = load_config(f"experiments/{name}.yaml").model
    ebm, encoder, decoder = build_models(cfg)
    x = paddle.uniform([3, cfg.channels, cfg.image_size, cfg.image_size], min=-1, max=1)
    assert ebm(x).shape == [3]
    mu, log_sigma = encoder(x)
    assert mu.shape == [3, cfg.latent_dim] and log_sigma.shape == [3, cfg.latent_dim]
    out = decoder(paddle.randn([3, cfg.latent_dim])).numpy()
    assert out.shape == (3, cfg.channels, cfg.image_size, cfg.image_size)
    assert np.abs(out).max() <= 1.0


def test_ebm_sums_its_head_outputs():
    cfg = load_config("experiments/mnist.yaml").model
    ebm = build_models(cfg).ebm
    assert ebm.head.weight.shape[0] == 100  # [CODE] the MNIST descriptor has 100 outputs
    x = paddle.uniform([2, 1, 28, 28], min=-1, max=1)
    heads = ebm.head(ebm.features(x)).flatten(1)
    np.testing.assert_allclose(ebm(x).numpy(), heads.sum(axis=1).numpy(), rtol=1e-5)


def test_initialisation_follows_released_code():
    paddle.seed(0)
    ebm, encoder, decoder = build_models(load_config("experiments/cifar10.yaml").model)
    w = ebm.features[0].weight.numpy()
    assert abs(w.std() - 0.005) < 0.0005 and abs(w.mean()) < 0.0005
    assert np.all(ebm.head.bias.numpy() == 0)
    deconv = decoder.net[0].weight.numpy()
    assert abs(deconv.std() - 0.005) < 0.0005
    # leaky ReLU slope 0.2 everywhere (Paddle's default would be 0.01)
    assert ebm.features[1]._negative_slope == pytest.approx(0.2)


@pytest.mark.parametrize("batch_stats", [True, False])
def test_batch_norm_mode_in_eval(batch_stats):
    cfg = load_config("experiments/mnist.yaml", [f"model.bn_batch_stats={str(batch_stats).lower()}"]).model
    decoder = build_models(cfg).decoder
    decoder.eval()
    z = paddle.randn([8, cfg.latent_dim])
    full, half = decoder(z).numpy(), decoder(z[:4]).numpy()
    # batch statistics make an image depend on its batch; running statistics do not
    assert (not np.allclose(full[:4], half, atol=1e-6)) == batch_stats
