"""The small public API, for notebooks and scripts: load a run, draw samples.

    import ebm_vae
    run = ebm_vae.load_run("runs/mnist")          # config + trained networks, in eval mode
    x = ebm_vae.sample(run, n=64, steps=30)       # numpy [64, C, H, W] in [-1, 1]

Neither call selects a device or sets thread counts unless asked (`load_run(..., device=)`);
Paddle's current device is used. Importing `ebm_vae` or this module has no side effects.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ebm_vae.training.runs import Run, load_run
from ebm_vae.core.sampling import (ancestral_sample, check_sampling_memory, sampling_defaults,
                                   with_steps)
from ebm_vae.utils.runtime import seed_all
from ebm_vae.utils.typed_yaml import ConfigError

__all__ = ["Run", "load_run", "sample"]


def sample(run: Run, n: int = 64, steps: Optional[int] = None, seed: Optional[int] = None,
           batch_size: Optional[int] = None, proposals: bool = False, progress: bool = False):
    """Ancestral Langevin sampling: z ~ N(0, I) -> g(z) -> `steps` Langevin steps under f
    (default: the config's `sample.steps`), `batch_size` chains at a time (default: the
    training `num_chains`, as the decoder's batch norm uses batch statistics). Returns the
    revised samples as float32 numpy [n, C, H, W], clipped to [-1, 1]; with `proposals=True` a
    pair (samples, decoder outputs g(z)). `seed` reseeds Paddle first, for repeatable draws;
    `progress`: a progress bar on stderr."""
    if n < 1:
        raise ConfigError(f"need n >= 1, got {n}")
    steps, batch_size = sampling_defaults(run.cfg, steps, batch_size)
    check_sampling_memory(n, run.cfg.model)
    if seed is not None:
        seed_all(seed)
    pair = ancestral_sample(run.models, n, run.cfg.model.latent_dim,
                            with_steps(run.cfg.langevin, steps), batch_size, progress)
    images = np.clip(pair.revised, -1.0, 1.0, out=pair.revised).astype(np.float32, copy=False)
    return (images, pair.proposals) if proposals else images
