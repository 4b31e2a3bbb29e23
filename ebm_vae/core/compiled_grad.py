"""df/dx of the EBM with the chain rule written out, compiled with oneDNN for the CPU
(`langevin.gradient`; measured in docs/speed.md).

Langevin (eq. L) needs only the input gradient of f_theta. For the EBM of core/models.py (conv +
leaky ReLU layers h_l = lrelu(pre_l), pre_l = conv(h_{l-1}, W_l) + b_l, h_0 = x, then a 'valid'
conv head whose outputs are summed into f) it is

    df/dh_L    = sum_o W_head[o]                          (the same for every x)
    df/dpre_l  = df/dh_l where pre_l > 0, else slope * df/dh_l
    df/dh_l-1  = conv2d_transpose(df/dpre_l, W_l)          (a convolution's input gradient)

`EnergyGradient` computes f and df/dx this way from forward operations only, with the weights as
an input, so it compiles once into a Paddle Inference predictor (utils/onednn.py) whose oneDNN
kernels then serve every Langevin step with the weights of that moment. Run eagerly it equals
autograd bit for bit; the predictor's kernels round differently (tests/test_compiled_grad.py).
"""
from __future__ import annotations

import math
import sys
import weakref
from typing import Callable, Optional

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ebm_vae.core.config import Gradient
from ebm_vae.core.models import EBM
from ebm_vae.utils import onednn
from ebm_vae.utils.runtime import math_threads

GradFn = Callable[[paddle.Tensor], paddle.Tensor]  # x -> df/dx
_compiled: "weakref.WeakKeyDictionary[EBM, dict[int, object]]" = weakref.WeakKeyDictionary()
_told: "weakref.WeakSet[nn.Layer]" = weakref.WeakSet()  # networks whose fallback was announced


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TF 'SAME' padding of one axis: (before, after, output size); the odd pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def ebm_weights(ebm: EBM) -> list[paddle.Tensor]:
    """The EBM's parameters in the order `EnergyGradient` reads them: each conv's weight and
    bias, then the head's."""
    convs = [m for m in ebm.features if isinstance(m, nn.Conv2D)] + [ebm.head]
    return [t for conv in convs for t in (conv.weight, conv.bias)]


class EnergyGradient(nn.Layer):
    """(f(x), df/dx) of an `EBM` of this architecture, for weights passed as one flat vector
    (`ebm_weights` concatenated)."""

    def __init__(self, ebm: EBM):
        super().__init__()
        self.slope = ebm.slope
        self.shapes = [list(t.shape) for t in ebm_weights(ebm)]
        self.layers = []  # (stride, [top, bottom, left, right], output_padding) per conv layer
        size = ebm.image_size
        for layer in ebm.cfg.conv:
            before, after, out = same_padding(size, layer.kernel, layer.stride)
            extra = size + before + after - (out - 1) * layer.stride - layer.kernel
            self.layers.append((layer.stride, [before, after, before, after], extra))
            size = out

    def unpack(self, theta: paddle.Tensor) -> list[paddle.Tensor]:
        """The flat weight vector as the tensors of `ebm_weights`, in their shapes."""
        w, offset = [], 0
        for shape in self.shapes:
            n = int(np.prod(shape))
            w.append(theta[offset:offset + n].reshape(shape))
            offset += n
        return w

    def forward(self, x: paddle.Tensor, theta: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        w = self.unpack(theta)
        pre, h = [], x
        for i, (stride, pad, _) in enumerate(self.layers):
            pre.append(F.conv2d(h, w[2 * i], w[2 * i + 1], stride=stride, padding=pad))
            h = F.leaky_relu(pre[-1], self.slope)
        head_w, head_b = w[-2], w[-1]
        f = F.conv2d(h, head_w, head_b).flatten(1).sum(axis=1)  # f = sum of the head's outputs
        grad = paddle.expand(head_w.sum(axis=0, keepdim=True), [x.shape[0]] + self.shapes[-2][1:])
        for i in reversed(range(len(self.layers))):
            stride, pad, extra = self.layers[i]
            grad = paddle.where(pre[i] > 0, grad, grad * self.slope)  # leaky ReLU
            grad = F.conv2d_transpose(grad, w[2 * i], stride=stride, padding=pad,
                                      output_padding=extra)  # the conv's input gradient
        return f, grad


def unavailable(ebm: nn.Layer) -> Optional[str]:
    """Why the compiled path cannot serve `ebm` here, or None."""
    if type(ebm) is not EBM:
        return f"it covers the EBM of core/models.py, not {type(ebm).__name__}"
    if "cpu" not in paddle.get_device():
        return "it runs on the CPU only"
    if not onednn.available():
        return "this Paddle was built without oneDNN"
    return None


class CompiledGradient:
    """The oneDNN predictor of `EnergyGradient` for one EBM and thread count."""

    CHECK_TOLERANCE = 0.05  # relative L2 distance to autograd on one chain; rounding gives ~1e-3

    def __init__(self, ebm: EBM, threads: int):
        size = ebm.image_size
        self.input_shape = [ebm.in_channels, size, size]
        n_weights = sum(int(np.prod(t.shape)) for t in ebm_weights(ebm))
        specs = [paddle.static.InputSpec([None, *self.input_shape], "float32"),
                 paddle.static.InputSpec([n_weights], "float32")]
        self.predictor = onednn.build_predictor(EnergyGradient(ebm), specs, threads)
        self.broken: Optional[str] = None

    def bind(self, ebm: EBM, autograd: GradFn) -> GradFn:
        """x -> df/dx under `ebm`'s current weights. oneDNN's copies of the previous weights are
        dropped first (a run on another batch shape); the first call compares one chain with
        autograd, and a mismatch (a Paddle whose oneDNN keeps stale weights) sets `broken`."""
        theta = np.concatenate([t.numpy().ravel() for t in ebm_weights(ebm)])
        checked = False

        def grad(x: paddle.Tensor) -> paddle.Tensor:
            nonlocal checked
            if not checked:
                other = np.zeros([1 if x.shape[0] != 1 else 2, *self.input_shape], np.float32)
                onednn.run(self.predictor, [other, theta])
            out = paddle.to_tensor(onednn.run(self.predictor, [x.numpy(), theta])[1])
            if not checked:
                checked = True
                self._check(autograd(x[:1]), out[:1])
            return out
        return grad

    def _check(self, exact: paddle.Tensor, compiled: paddle.Tensor) -> None:
        gap = float(paddle.linalg.norm(compiled - exact)) / max(float(paddle.linalg.norm(exact)), 1e-30)
        if not gap <= self.CHECK_TOLERANCE:
            self.broken = f"it differs from autograd by {gap:.3g} (relative L2) on this Paddle"
            raise _Mismatch(self.broken)


class _Mismatch(RuntimeError):
    """The compiled gradient disagreed with autograd (see CompiledGradient.bind)."""


def compiled_gradient(ebm: nn.Layer, gradient: Gradient, autograd: GradFn) -> Optional[GradFn]:
    """df/dx of `ebm` with its current weights through its oneDNN predictor (built on first use
    for each thread count), or None where autograd computes it: `gradient` is "autograd", or
    "auto" off the CPU or for another network. Where "onednn" (or "auto" on a CPU) cannot be
    served, one line on stderr says why, once per network, and autograd takes over; so it does
    if the compiled gradient ever disagrees with `autograd` (the same gradient by paddle.grad)."""
    if gradient == "autograd":
        return None
    why = unavailable(ebm)
    if why is not None:
        _tell(ebm, gradient, why, loud=gradient == "onednn" or "oneDNN" in why)
        return None
    threads = math_threads()
    cache = _compiled.setdefault(ebm, {})
    if threads not in cache:
        cache[threads] = CompiledGradient(ebm, threads)
    compiled = cache[threads]
    if compiled.broken:
        return None
    fast = compiled.bind(ebm, autograd)

    def grad(x: paddle.Tensor) -> paddle.Tensor:
        if compiled.broken:
            return autograd(x)
        try:
            return fast(x)
        except _Mismatch as err:
            _tell(ebm, gradient, str(err), loud=True)
            return autograd(x)
    return grad


def _tell(ebm: nn.Layer, gradient: str, why: str, loud: bool) -> None:
    """One line on stderr, once per network, that autograd computes its gradient and why."""
    if loud and ebm not in _told:
        _told.add(ebm)
        print(f"langevin.gradient={gradient}: the compiled oneDNN input gradient is unavailable "
              f"({why}); using autograd", file=sys.stderr)
