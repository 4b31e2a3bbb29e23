"""The conditional networks of image completion (docs/method.md §5; the design is ours).

The condition c is the image with its hole zeroed plus the mask as a 4th channel; the target y is
the full image. Conditional versions of the three networks:
- `ConditionalEBM`      f_theta(y, c): p_theta(y | c) ∝ exp(f_theta(y, c)); a ConvNet on [y, c]
                        (patch or global head), optionally plus a learned Gaussian term around a
                        U-Net mean mu_theta(c) over the hole.
- `ConditionalEncoder`  q_phi(z | y, c): the encoder on [y, c].
- `ConditionalDecoder`  g_alpha(z, c): an image-to-image U-Net over c (skips at every scale), z at
                        the bottleneck.
The visible pixels belong to c, so p(y | c) is a distribution over the hole's contents: the EBM's
`project` keeps them in every chain (core/teach.py runs Algorithm 1 with this condition).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import paddle
import paddle.nn as nn

from ebm_vae.completion.config import CompletionModelConfig, UNetConfig
from ebm_vae.core.layers import Conv2D, Conv2DTranspose
from ebm_vae.core.models import Encoder, conv_attrs, conv_stack, conv_stack_size


def condition(images: paddle.Tensor, masks: paddle.Tensor) -> paddle.Tensor:
    """c = [image with the hole zeroed, mask]: [B, C + 1, H, W]."""
    return paddle.concat([images * (1.0 - masks), masks], axis=1)


class ConditionalEBM(nn.Layer):
    """f_theta(y, c) in R on the channel stack [y, c]: a conv stack, then a global head (one
    'valid' conv over the remaining map) or a patch head (a 'SAME' conv to a map of local
    energies, summed over positions). Patches that do not touch the hole are the same in data
    and in samples (both keep the visible pixels), so they cancel in the EBM loss.

    With `ebm.mean` (a z-free U-Net mu_theta(c)), f also holds a Gaussian term over the hole:
        f(y, c) = net(y, c) - ||m * (y - mu(c))||^2 / (2 mean_sigma^2),
    i.e. p_theta(y | c) is an exponential tilting of N(mu(c), mean_sigma^2) by exp(net): the
    paper's Gaussian reference distribution made conditional and learned. Its ML gradient moves
    mu(c) by (data - revised samples); Langevin pulls the hole towards mu(c)."""

    def __init__(self, cfg: CompletionModelConfig):
        super().__init__()
        e = cfg.ebm
        self.channels = cfg.channels
        self.features = conv_stack(e.conv, 2 * cfg.channels + 1, cfg.init_std, cfg.leaky_slope)
        size = conv_stack_size(e.conv, cfg.image_size)
        kernel, padding = (size, 0) if e.head == "global" else (e.head_kernel, "SAME")
        self.head = Conv2D(e.conv[-1].channels, e.out_dim, kernel, padding=padding,
                              **conv_attrs(cfg.init_std))
        for p in self.features.parameters() + self.head.parameters():
            p.optimize_attr["learning_rate"] = e.net_lr_scale  # Adam's lr multiplier
        self.mean = None if e.mean is None else UNet(cfg, e.mean, latent_dim=0)
        self.mean_sigma = e.mean_sigma

    def mean_image(self, c: paddle.Tensor) -> Optional[paddle.Tensor]:
        """mu_theta(c), or None without a Gaussian term."""
        return None if self.mean is None else self.mean(None, c)

    def forward(self, y: paddle.Tensor, c: paddle.Tensor,
                mu: Optional[paddle.Tensor] = None) -> paddle.Tensor:
        """f(y, c); `mu`: mu_theta(c) computed beforehand (Langevin reuses it over a chain)."""
        f = self.head(self.features(paddle.concat([y, c], axis=1))).flatten(1).sum(axis=1)
        if self.mean is None:
            return f
        mu = self.mean_image(c) if mu is None else mu
        gap = c[:, self.channels:] * (y - mu)
        return f - (gap ** 2).flatten(1).sum(axis=1) / (2 * self.mean_sigma ** 2)

    def chain_inputs(self, c: paddle.Tensor) -> tuple[paddle.Tensor, ...]:
        """What f takes beside y along a Langevin chain: c, and mu_theta(c) computed once."""
        mu = self.mean_image(c)
        return (c,) if mu is None else (c, mu)

    def project(self, y: paddle.Tensor, c: paddle.Tensor) -> paddle.Tensor:
        """Onto the support of p_theta(y | c): the visible pixels are those of c."""
        return clamp_visible(y, c)


class ConditionalEncoder(nn.Layer):
    """q_phi(z | y, c): (mu, log_sigma) from the encoder's ConvNet on [y, c]."""

    def __init__(self, cfg: CompletionModelConfig):
        super().__init__()
        self.net = Encoder(cfg.encoder, 2 * cfg.channels + 1, cfg.image_size, cfg.latent_dim,
                           cfg.init_std, cfg.leaky_slope)

    def forward(self, y: paddle.Tensor, c: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        return self.net(paddle.concat([y, c], axis=1))


def _he(layer: nn.Layer) -> nn.Layer:
    """He-normal kernel (fan-in), zero bias: keeps activations alive through the U-Net's depth."""
    w = layer.weight
    transposed = isinstance(layer, nn.Conv2DTranspose)
    fan_in = (w.shape[0] if transposed else w.shape[1]) * w.shape[2] * w.shape[3]
    if transposed:  # each output pixel of a stride-2 4x4 transposed conv sees a quarter of the taps
        fan_in //= 4
    w.set_value(paddle.randn(w.shape) * math.sqrt(2.0 / fan_in))
    layer.bias.set_value(paddle.zeros(layer.bias.shape))
    return layer


def _tile(z: paddle.Tensor, size: int) -> paddle.Tensor:
    return z.reshape([z.shape[0], z.shape[1], 1, 1]).expand([z.shape[0], z.shape[1], size, size])


class UNet(nn.Layer):
    """An image-to-image U-Net over c (UNetConfig); with latent_dim > 0 it is g_alpha(z, c), z
    tiled at the bottleneck (and at every up-path scale if z_every_scale).

    down_i: [B, down[i], S / 2^(i+1)]; bottleneck: conv3x3([down_L, tile(z)]);
    up path from the bottleneck: deconv (or nearest x2 + conv) to the next scale, concatenated with that scale's
    down map (and tile(z) if z_every_scale); at full resolution with c; out: tanh(conv(.))."""

    def __init__(self, cfg: CompletionModelConfig, u: UNetConfig, latent_dim: int):
        super().__init__()
        d, slope = latent_dim, cfg.leaky_slope
        self.z_every_scale = u.z_every_scale and d > 0
        in_c = cfg.channels + 1
        self.down = nn.LayerList()
        for ch in u.down:
            self.down.append(_he(Conv2D(in_c, ch, 4, 2, 1)))
            in_c = ch
        self.bottleneck = _he(Conv2D(in_c + d, u.bottleneck, 3, 1, 1))
        self.act, self.up_act = nn.LeakyReLU(slope), nn.ReLU()
        skips = [cfg.channels + 1] + list(u.down[:-1])  # the map each up step lands on
        extra = d if self.z_every_scale else 0
        self.up = nn.LayerList()
        in_c = u.bottleneck
        for skip, ch in zip(reversed(skips), reversed([u.down[0]] + list(u.down[:-1]))):
            self.up.append(_he(Conv2DTranspose(in_c, ch, 4, 2, 1)) if u.up == "deconv" else
                           nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                         _he(Conv2D(in_c, ch, 3, 1, 1))))
            in_c = ch + skip + extra
        self.out = Conv2D(in_c, cfg.channels, u.out_kernel, 1, u.out_kernel // 2,
                             **conv_attrs(cfg.init_std))

    def forward(self, z: Optional[paddle.Tensor], c: paddle.Tensor) -> paddle.Tensor:
        maps, h = [c], c
        for conv in self.down:
            h = self.act(conv(h))
            maps.append(h)
        if z is not None:
            h = paddle.concat([h, _tile(z, h.shape[2])], axis=1)
        h = self.act(self.bottleneck(h))
        for deconv, skip in zip(self.up, reversed(maps[:-1])):
            parts = [self.up_act(deconv(h)), skip]
            if self.z_every_scale:
                parts.append(_tile(z, skip.shape[2]))
            h = paddle.concat(parts, axis=1)
        return paddle.tanh(self.out(h))


class ConditionalDecoder(UNet):
    """g_alpha(z, c): the image-to-image U-Net over c with z at the bottleneck (model.decoder)."""

    def __init__(self, cfg: CompletionModelConfig):
        super().__init__(cfg, cfg.decoder, cfg.latent_dim)


class ConditionalModels(NamedTuple):
    ebm: ConditionalEBM
    encoder: ConditionalEncoder
    decoder: ConditionalDecoder


def build_conditional_models(cfg: CompletionModelConfig) -> ConditionalModels:
    """Build f_theta, q_phi, g_alpha (fresh parameter names, so checkpoints match by name)."""
    with paddle.utils.unique_name.guard():
        return ConditionalModels(ConditionalEBM(cfg), ConditionalEncoder(cfg), ConditionalDecoder(cfg))


def clamp_visible(y: paddle.Tensor, c: paddle.Tensor) -> paddle.Tensor:
    """y with its visible pixels replaced by the condition's: m * y + (1 - m) * y_visible."""
    channels = y.shape[1]
    return c[:, channels:] * y + c[:, :channels]  # c[:, :C] is already zero inside the hole
