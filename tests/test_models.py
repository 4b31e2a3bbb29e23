"""Every architecture's shapes, initialisation and batch-norm mode."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from ebm_vae.core.config import load_config
from ebm_vae.core.models import build_models


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


def _tf_same_pads(size_in: int, size_out: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding of the forward conv size_out -> size_in: the odd pixel goes after."""
    total = max((size_in - 1) * stride + kernel - size_out, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_transposed_convs_align_with_tf_same(name):
    """TF's conv2d_transpose(padding='SAME') is the adjoint of a 'SAME' conv: <conv(y), x> =
    <y, convT(x)>. Each decoder layer must equal the gradient of that inner product in y."""
    cfg = load_config(f"experiments/{name}.yaml").model
    decoder = build_models(cfg).decoder
    convs = [m for m in decoder.sublayers() if isinstance(m, paddle.nn.Conv2DTranspose)]
    size = 1
    for layer, conv in zip(cfg.decoder.layers, convs):
        out = layer.out_size(size)
        x = paddle.randn([2, conv.weight.shape[0], size, size])
        y = paddle.randn([2, conv.weight.shape[1], out, out])
        y.stop_gradient = False
        before, after = _tf_same_pads(size, out, layer.kernel, layer.stride)
        padded = paddle.nn.functional.pad(y, [before, after, before, after])
        fwd = paddle.nn.functional.conv2d(padded, conv.weight, stride=layer.stride)
        expected = paddle.grad((fwd * x).sum(), y)[0]
        got = conv(x) - conv.bias.reshape([1, -1, 1, 1])
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)
        size = out
