"""The FID Inception on a CPU through Paddle Inference with oneDNN kernels.

Paddle's eager (dygraph) convolutions reach about a third of this CPU's matrix-product rate; the
same network exported once (`paddle.jit.save`) and run by a Paddle Inference predictor with
oneDNN (conv + batch-norm + ReLU fused) computes the same pool3 features (to ~1e-5) several times
faster (bench/bench_inception.py). Building the predictor takes seconds, so `inception_outputs`
uses it only on CPU and for at least `MIN_IMAGES` images; it is built once per network object.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import paddle
import paddle.nn as nn

from ebm_vae.utils import onednn

MIN_IMAGES = 64  # below this the predictor's build time outweighs what it saves


def available() -> bool:
    """Whether this Paddle runs on CPU and was built with oneDNN."""
    return onednn.available()


def build_predictor(net: nn.Layer, image_shape: list[int], threads: int) -> Any:
    """A Paddle Inference predictor (oneDNN, `threads` math threads) of `net`'s forward on
    batches of `image_shape` ([C, H, W])."""
    spec = [paddle.static.InputSpec([None, *image_shape], "float32")]
    return onednn.build_predictor(copy.deepcopy(net), spec, threads)  # to_static changes its net


def forward(net: nn.Layer, x: paddle.Tensor, threads: int) -> np.ndarray:
    """`net(x)` (the pool3 features [N, 2048] for the FID Inception) through the network's
    predictor, built on first use from the weights `net` has then (fixed weights only)."""
    predictor = getattr(net, "onednn_predictor", None)
    if predictor is None:
        predictor = build_predictor(net, list(x.shape[1:]), threads)
        net.onednn_predictor = predictor
    return onednn.run(predictor, [x.numpy()])[0]
