"""The three networks of the paper (docs/method.md §3), built from config layer lists.

- `EBM`     f_theta(x): bottom-up ConvNet, the negative energy; p_theta(x) ∝ exp(f_theta(x)).
- `Encoder` q_phi(z|x) = N(mu(x), diag(exp(2 log_sigma(x)))).
- `Decoder` g_alpha(z): top-down transposed ConvNet with a tanh output in [-1, 1].

MNIST/Fashion-MNIST and CIFAR-10 differ only by the layer lists in their YAML files.
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import paddle
import paddle.nn as nn

from ebm_vae.core.config import ConvLayer, DecoderConfig, EBMConfig, EncoderConfig, ModelConfig
from ebm_vae.core.layers import Conv2D, Conv2DTranspose, add_channel_bias


def conv_attrs(init_std: float) -> dict:
    """Conv kernels ~ N(0, init_std^2), zero biases [CODE]."""
    return {"weight_attr": paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, init_std)),
            "bias_attr": paddle.ParamAttr(initializer=nn.initializer.Constant(0.0))}


def _dense(in_dim: int, out_dim: int) -> nn.Linear:
    """Dense layer with TF's default init: Glorot-uniform kernel, zero bias [CODE]."""
    return nn.Linear(in_dim, out_dim,
                     weight_attr=paddle.ParamAttr(initializer=nn.initializer.XavierUniform()),
                     bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)))


def conv_stack(layers: list[ConvLayer], in_channels: int, init_std: float, slope: float,
               dropout: float = 0.0) -> nn.Sequential:
    """Conv ('SAME' padding, as TF) + leaky ReLU (+ dropout) for each layer."""
    mods: list[nn.Layer] = []
    for layer in layers:
        mods += [Conv2D(in_channels, layer.channels, layer.kernel, layer.stride,
                           padding="SAME", **conv_attrs(init_std)), nn.LeakyReLU(slope)]
        if dropout > 0:
            mods.append(nn.Dropout(dropout))
        in_channels = layer.channels
    return nn.Sequential(*mods)


def conv_stack_size(layers: list[ConvLayer], image_size: int) -> int:
    """Spatial size after a 'SAME' conv stack: ceil(size / stride) per layer."""
    for layer in layers:
        image_size = math.ceil(image_size / layer.stride)
    return image_size


class EBM(nn.Layer):
    """f_theta(x) in R: conv stack, then a 'valid' conv over the whole remaining map ("fc").

    With several head outputs, f is their sum, as TF differentiates the released MNIST net [CODE].
    """

    def __init__(self, cfg: EBMConfig, in_channels: int, image_size: int, init_std: float,
                 slope: float):
        super().__init__()
        self.cfg, self.in_channels, self.image_size, self.slope = cfg, in_channels, image_size, slope
        self.features = conv_stack(cfg.conv, in_channels, init_std, slope)
        size = conv_stack_size(cfg.conv, image_size)
        self.head = Conv2D(cfg.conv[-1].channels, cfg.out_dim, size, **conv_attrs(init_std))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.head(self.features(x)).flatten(1).sum(axis=1)


class Encoder(nn.Layer):
    """q_phi(z|x): returns (mu, log_sigma), log_sigma = 0.5 * Dense(h) as in the released code."""

    def __init__(self, cfg: EncoderConfig, in_channels: int, image_size: int, latent_dim: int,
                 init_std: float, slope: float):
        super().__init__()
        self.features = conv_stack(cfg.conv, in_channels, init_std, slope, cfg.dropout)
        flat = cfg.conv[-1].channels * conv_stack_size(cfg.conv, image_size) ** 2
        self.mean = _dense(flat, latent_dim)
        self.log_sigma = _dense(flat, latent_dim)

    def forward(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        h = self.features(x).flatten(1)
        return self.mean(h), 0.5 * self.log_sigma(h)


class CenteredBatchNorm(nn.Layer):
    """TF batch_norm defaults: center=True, scale=False (no gamma), eps 1e-3, decay 0.999 [CODE].

    batch_stats=True keeps using batch statistics in eval mode too (TF1 is_training=True always).
    The offset beta is a separate parameter: Paddle's BatchNorm2D computes no bias gradient
    when its scale is frozen (weight_attr=False).
    """

    def __init__(self, channels: int, batch_stats: bool):
        super().__init__()
        self.norm = nn.BatchNorm2D(channels, momentum=0.999, epsilon=1e-3, weight_attr=False,
                                   bias_attr=False, use_global_stats=False if batch_stats else None)
        self.beta = self.create_parameter([channels], default_initializer=nn.initializer.Constant(0.0))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        with warnings.catch_warnings():  # Paddle's note that training tracks the running stats
            warnings.filterwarnings("ignore", "When training, we now always track global mean")
            return add_channel_bias(self.norm(x), self.beta)


class Decoder(nn.Layer):
    """g_alpha(z): z as a 1x1 map, transposed convs (+BN) + `act`; the last layer ends in tanh."""

    def __init__(self, cfg: DecoderConfig, latent_dim: int, init_std: float, slope: float,
                 bn_batch_stats: bool):
        super().__init__()
        mods: list[nn.Layer] = []
        in_channels = latent_dim
        for i, layer in enumerate(cfg.layers):
            before, after = layer.crop
            mods.append(Conv2DTranspose(in_channels, layer.channels, layer.kernel, layer.stride,
                                           [before, after, before, after], layer.output_padding,
                                           **conv_attrs(init_std)))
            if layer.batch_norm:
                mods.append(CenteredBatchNorm(layer.channels, bn_batch_stats))
            if i == len(cfg.layers) - 1:
                mods.append(nn.Tanh())
            else:
                mods.append(nn.ReLU() if cfg.act == "relu" else nn.LeakyReLU(slope))
            in_channels = layer.channels
        self.net = nn.Sequential(*mods)

    def forward(self, z: paddle.Tensor) -> paddle.Tensor:
        return self.net(z.reshape([z.shape[0], z.shape[1], 1, 1]))


class Models(NamedTuple):
    ebm: EBM
    encoder: Encoder
    decoder: Decoder


def build_models(cfg: ModelConfig) -> Models:
    """Build f_theta, q_phi and g_alpha (fresh parameter names, so checkpoints match by name)."""
    with paddle.utils.unique_name.guard():
        return Models(
            EBM(cfg.ebm, cfg.channels, cfg.image_size, cfg.init_std, cfg.leaky_slope),
            Encoder(cfg.encoder, cfg.channels, cfg.image_size, cfg.latent_dim, cfg.init_std,
                    cfg.leaky_slope),
            Decoder(cfg.decoder, cfg.latent_dim, cfg.init_std, cfg.leaky_slope, cfg.bn_batch_stats),
        )
