"""The FID Inception on a CPU through Paddle Inference with oneDNN kernels.

Paddle's eager (dygraph) convolutions reach about a third of this CPU's matrix-product rate; the
same network exported once (`paddle.jit.save`) and run by a Paddle Inference predictor with
oneDNN (conv + batch-norm + ReLU fused) computes the same pool3 features (to ~1e-5) several times
faster (bench/bench_inception.py). Building the predictor takes seconds, so `inception_outputs`
uses it only on CPU and for at least `MIN_IMAGES` images; it is built once per network object.
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import paddle
import paddle.nn as nn

MIN_IMAGES = 64  # below this the predictor's build time outweighs what it saves


def available() -> bool:
    """Whether this Paddle runs on CPU and was built with oneDNN."""
    return ("cpu" in paddle.get_device()
            and bool(paddle.base.core.is_compiled_with_mkldnn()))


def build_predictor(net: nn.Layer, image_shape: list[int], threads: int) -> Any:
    """A Paddle Inference predictor (oneDNN, `threads` math threads) of `net`'s forward on
    batches of `image_shape` ([C, H, W])."""
    spec = [paddle.static.InputSpec([None, *image_shape], "float32")]
    with tempfile.TemporaryDirectory() as tmp:
        prefix = str(Path(tmp) / "inception")
        static = paddle.jit.to_static(copy.deepcopy(net), input_spec=spec, full_graph=True)
        paddle.jit.save(static, prefix)  # a copy: to_static would change `net` in place
        graph = prefix + (".json" if Path(prefix + ".json").is_file() else ".pdmodel")  # PIR | 2.6
        config = paddle.inference.Config(graph, prefix + ".pdiparams")
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
        config.disable_glog_info()
        return paddle.inference.create_predictor(config)


def forward(net: nn.Layer, x: paddle.Tensor, threads: int) -> np.ndarray:
    """`net(x)` (the pool3 features [N, 2048] for the FID Inception) through the network's
    predictor, built on first use from the weights `net` has then (fixed weights only)."""
    predictor = getattr(net, "onednn_predictor", None)
    if predictor is None:
        predictor = build_predictor(net, list(x.shape[1:]), threads)
        net.onednn_predictor = predictor
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(x.shape)
    handle.copy_from_cpu(x.numpy())
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
