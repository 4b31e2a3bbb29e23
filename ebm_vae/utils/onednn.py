"""Paddle Inference predictors with oneDNN kernels: a network's forward pass compiled for the CPU.

Paddle's eager CPU convolutions never use oneDNN (the `FLAGS_use_mkldnn` / `FLAGS_use_onednn`
flags leave their results bit-identical); a network exported once (`paddle.jit.save`) and run by a
predictor with oneDNN does, with convolutions and activations fused (docs/speed.md). Used for the
FID Inception (eval/inception_onednn.py) and the EBM's input gradient (core/compiled_grad.py).
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import paddle
import paddle.nn as nn


def available() -> bool:
    """Whether this Paddle runs on CPU and was built with oneDNN."""
    return "cpu" in paddle.get_device() and bool(paddle.base.core.is_compiled_with_mkldnn())


def build_predictor(net: nn.Layer, specs: list[paddle.static.InputSpec], threads: int) -> Any:
    """A predictor (oneDNN, `threads` math threads) of `net`'s forward on inputs of `specs`.
    `net` is converted in place by `paddle.jit.to_static`: pass a copy if it is used elsewhere.

    oneDNN keeps what it derives from a convolution's filter (its reordered copy) between runs
    of the same input shapes, as if the filter were a fixed weight. Every predictor here keeps
    that for the last input shape only, so a network whose filters are inputs must be run once
    on another shape after they change (core/compiled_grad.py does). The cache setting acts
    process-wide: one predictor with Paddle's default (keep every shape) run in between made the
    others keep every shape too, and the compiled gradient's filters went stale (its check
    caught it); hence the one setting for all, which costs fixed-shape networks nothing.
    """
    with tempfile.TemporaryDirectory() as tmp, native_output_silenced():
        prefix = str(Path(tmp) / "net")
        paddle.jit.save(paddle.jit.to_static(net, input_spec=specs, full_graph=True), prefix)
        graph = prefix + (".json" if Path(prefix + ".json").is_file() else ".pdmodel")  # PIR | 2.6
        config = paddle.inference.Config()
        config.set_prog_file(graph)
        if net.parameters():  # Paddle 2.6 refuses an empty parameter file
            config.set_params_file(prefix + ".pdiparams")
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_mkldnn_cache_capacity(1)
        config.set_cpu_math_library_num_threads(threads)
        config.disable_glog_info()
        return paddle.inference.create_predictor(config)


@contextlib.contextmanager
def native_output_silenced() -> Iterator[None]:
    """Drop what C++ code writes to the process's stdout and stderr meanwhile (Paddle's notes
    while it converts, loads and first runs a program: "static graph(PIR) not support input out
    tensor", "ReduceMeanCheckIfOneDNNSupport"); Python exceptions still propagate."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def run(predictor: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The predictor's outputs for `inputs` (float32 arrays, in the order of its input specs)."""
    for name, value in zip(predictor.get_input_names(), inputs):
        handle = predictor.get_input_handle(name)
        handle.reshape(list(value.shape))
        handle.copy_from_cpu(np.ascontiguousarray(value, dtype=np.float32))
    with native_output_silenced():
        predictor.run()
    return [predictor.get_output_handle(name).copy_to_cpu() for name in predictor.get_output_names()]
