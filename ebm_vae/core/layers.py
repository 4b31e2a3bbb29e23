"""Convolutions whose per-channel bias is added as a [N, C, H*W] + [C, 1] broadcast.

Paddle's CPU kernel for the [N, C, H, W] + [1, C, 1, 1] broadcast that `nn.Conv2D` and
`nn.Conv2DTranspose` use is about 3x slower than the same sum over one flattened axis (measured in
docs/speed.md); the numbers are bit-equal, the parameters and their names are those of Paddle's
layers (shipped weights load unchanged), only the addition's memory layout differs.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F


def add_channel_bias(y: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    """y + bias over the channels of an NCHW map (bit-equal to y + bias.reshape([1, C, 1, 1]))."""
    n, c, h, w = y.shape
    return (y.reshape([n, c, h * w]) + bias.reshape([c, 1])).reshape([n, c, h, w])


class Conv2D(nn.Conv2D):
    """`nn.Conv2D` (zero padding, NCHW) with the flattened bias add."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = F.conv2d(x, self.weight, None, self._stride, self._padding, self._dilation,
                     self._groups, self._data_format)
        return y if self.bias is None else add_channel_bias(y, self.bias)


class Conv2DTranspose(nn.Conv2DTranspose):
    """`nn.Conv2DTranspose` (NCHW, no output_size) with the flattened bias add."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = F.conv2d_transpose(x, self.weight, None, padding=self._padding,
                               output_padding=self.output_padding, stride=self._stride,
                               dilation=self._dilation, groups=self._groups,
                               data_format=self._data_format)
        return y if self.bias is None else add_channel_bias(y, self.bias)
