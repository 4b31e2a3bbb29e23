"""An exponential moving average of the networks' weights, for sampling [OURS, after Du et al.'s
improved contrastive divergence]: after every iteration's Adam steps,

    w_avg <- decay * w_avg + (1 - decay) * w        for every tensor of every network,

batch-norm running statistics included. Training never reads the averages; they are saved in the
checkpoints (`ema_ebm.pdparams`, ...) so a resumed run continues them exactly, scored beside the
trained weights during training, and exported by `tools/convert_run.py --weights-only --ema`.
"""
from __future__ import annotations

import copy
from typing import Any, NamedTuple

import paddle

PREFIX = "ema_"  # checkpoint files of the averages: ema_ebm.pdparams, ema_encoder.pdparams, ...


class WeightAverage:
    """The averaged copies (`models`, the same NamedTuple type as the trained networks)."""

    def __init__(self, models: NamedTuple, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"the average's decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.models = type(models)(*(copy.deepcopy(layer) for layer in models))
        for layer in self.models:
            layer.eval()
            for p in layer.parameters():
                p.stop_gradient = True

    def modules(self) -> dict[str, Any]:
        """The averages as checkpoint objects: {"ema_ebm": layer, ...}."""
        return {PREFIX + name: layer for name, layer in self.models._asdict().items()}

    def reset(self, models: NamedTuple) -> None:
        """Start the average over at `models`' weights (a run begun from trained networks)."""
        self._blend(models, 0.0)

    def update(self, models: NamedTuple) -> None:
        self._blend(models, self.decay)

    @paddle.no_grad()
    def _blend(self, models: NamedTuple, decay: float) -> None:
        for avg, layer in zip(self.models, models):
            live = layer.state_dict()
            for key, a in avg.state_dict().items():
                w = live[key]
                a.set_value(decay * a + (1 - decay) * w if paddle.is_floating_point(a)
                            else w)
