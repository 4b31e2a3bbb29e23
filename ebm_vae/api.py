"""The small public API, for notebooks and scripts: load a run, draw samples.

    import ebm_vae
    run = ebm_vae.load_run("runs/mnist")          # config + trained networks, in eval mode
    x = ebm_vae.sample(run, n=64, steps=30)       # numpy [64, C, H, W] in [-1, 1]

Neither call selects a device or sets thread counts unless asked (`device=`); Paddle's current
device is used. Importing `ebm_vae` or this module has no side effects.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import paddle

from ebm_vae.core.runs import Run, open_run
from ebm_vae.core.sampling import ancestral_sample, check_sampling_memory, with_steps
from ebm_vae.utils.runtime import set_device
from ebm_vae.utils.typed_yaml import ConfigError

__all__ = ["Run", "load_run", "sample"]


def load_run(run_dir: str | Path, device: Optional[str] = None, untrained: bool = False,
             averaged: bool = False) -> Run:
    """Config and networks of a run folder: `config.yaml` plus its newest checkpoint folder (or
    `ebm/encoder/decoder.pdparams` beside the config). Returns a `Run(cfg, models, iteration)`;
    `models.ebm`, `models.encoder`, `models.decoder` are Paddle layers in eval mode. `device`
    ('cpu' or 'gpu'): select it first (default: leave Paddle's current device as it is).
    `untrained=True`: the architecture at its seeded initialisation; `averaged=True`: the
    checkpoint's moving average of the weights (runs trained with train.ema > 0)."""
    if device is not None:
        set_device(device)
    return open_run(run_dir, untrained, averaged)


def sample(run: Run, n: int = 64, steps: Optional[int] = None, seed: Optional[int] = None,
           batch_size: Optional[int] = None, proposals: bool = False):
    """Ancestral Langevin sampling: z ~ N(0, I) -> g(z) -> `steps` Langevin steps under f
    (default: the config's `sample.steps`), `batch_size` chains at a time (default: the
    training `num_chains`, as the decoder's batch norm uses batch statistics). Returns the
    revised samples as float32 numpy [n, C, H, W], clipped to [-1, 1]; with `proposals=True` a
    pair (samples, decoder outputs g(z)). `seed` reseeds Paddle first, for repeatable draws."""
    steps = run.cfg.sample.steps if steps is None else steps
    batch_size = run.cfg.train.num_chains if batch_size is None else batch_size
    if n < 1 or steps < 0 or batch_size < 1:
        raise ConfigError(f"need n >= 1, steps >= 0 and batch_size >= 1, got {n}, {steps}, "
                          f"{batch_size}")
    check_sampling_memory(n, run.cfg.model)
    if seed is not None:
        paddle.seed(seed)
    pair = ancestral_sample(run.models, n, run.cfg.model.latent_dim,
                            with_steps(run.cfg.langevin, steps), batch_size, progress=False)
    images = np.clip(pair.revised, -1.0, 1.0).astype(np.float32)
    return (images, pair.proposals) if proposals else images
