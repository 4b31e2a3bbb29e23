"""Test-time use of a trained run: ancestral Langevin sampling, interpolation, reconstruction.

Ancestral Langevin sampling [PAPER]: z ~ N(0, I) -> x_hat = g_alpha(z) -> L steps of eq. (L) under
f_theta (L = `sample.steps`, 30 in the released code). Work is done in batches of `batch_size`
chains (default: the training `num_chains`, since the decoder's batch norm uses batch statistics).
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import numpy as np
import paddle

from ebm_vae.core.config import LangevinConfig
from ebm_vae.core.langevin import langevin
from ebm_vae.core.models import Models
from ebm_vae.core.teach import revise
from ebm_vae.utils.memory import NotEnoughMemory, check_fits
from ebm_vae.utils.progress import Progress
from ebm_vae.utils.runtime import seed_all
from ebm_vae.utils.typed_yaml import ConfigError


def with_steps(lv: LangevinConfig, steps: int) -> LangevinConfig:
    return dataclasses.replace(lv, steps=steps)


def sampling_defaults(cfg: Any, steps: Optional[int] = None, chains: Optional[int] = None
                      ) -> tuple[int, int]:
    """Test-time (Langevin steps, chains per batch) of a run's config: `steps` (default
    `sample.steps`) and `chains` (default `train.num_chains`, as the decoder's batch norm uses
    batch statistics). Fewer than 0 steps or 1 chain is a one-line ConfigError."""
    steps = cfg.sample.steps if steps is None else steps
    chains = cfg.train.num_chains if chains is None else chains
    if steps < 0 or chains < 1:
        raise ConfigError(f"need steps >= 0 and batch_size >= 1, got {steps} and {chains}")
    return steps, chains


class Pair(NamedTuple):
    """Images before and after Langevin revision, [N, C, H, W] float32 in about [-1, 1]."""
    proposals: np.ndarray
    revised: np.ndarray


def check_sampling_memory(n: int, model: Any, flag: str = "n") -> None:
    """Refuse in one line to draw `n` samples of the images `model` (a model config) describes
    when they would not fit in free memory: the samples, their proposals and a clipped copy,
    float32 (the chains of one batch come on top)."""
    size = model.channels * model.image_size ** 2 * 4
    check_fits(3 * n * size, f"{n} samples of {model.channels}x{model.image_size}x"
               f"{model.image_size} (with their proposals, float32)",
               f"draw fewer (--{flag}), e.g. in several runs with other --seed values")


def _revised_batch(models: Models, chains: int, latent_dim: int, lv: LangevinConfig
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(g(z), revised) of one batch; a batch too large for the device's memory is one line."""
    try:
        x_hat, x_tilde = revise(models, chains, latent_dim, lv)
        return x_hat.numpy(), x_tilde.numpy()
    except MemoryError as err:  # Paddle's ResourceExhausted
        why = (str(err).strip().splitlines() or ["out of memory"])[0].rstrip(".")
        raise NotEnoughMemory(f"a batch of {chains} chains: {why}; lower the batch size "
                              "(--batch-size)") from None


def ancestral_sample(models: Models, n: int, latent_dim: int, lv: LangevinConfig,
                     batch_size: int, progress: bool = True) -> Pair:
    """n samples z ~ N(0, I) -> g_alpha(z) -> `lv.steps` Langevin steps, `batch_size` at a time
    (written into arrays of n allocated after the first batch)."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got {n} and {batch_size}")
    bar = Progress(n, desc="sampling", enabled=progress)
    pair, done = None, 0
    while done < n:
        x_hat, x_tilde = _revised_batch(models, min(batch_size, n - done), latent_dim, lv)
        if pair is None:
            pair = Pair(*(np.empty((n, *x.shape[1:]), x.dtype) for x in (x_hat, x_tilde)))
        pair.proposals[done:done + len(x_hat)] = x_hat
        pair.revised[done:done + len(x_hat)] = x_tilde
        done += len(x_hat)
        bar.update(done, force=done == n)
    bar.close()
    return pair


def unchanged_sample(models: Models, seed: int, n: int, latent_dim: int, lv: LangevinConfig,
                     batch_size: int) -> Pair:
    """`ancestral_sample` in eval mode from Paddle seeded with `seed` (the same z every call),
    leaving the networks as they were: their modes and states (batch-norm running statistics)
    are restored. For scores during training."""
    modes = [m.training for m in models]
    states = [{k: v.numpy() for k, v in m.state_dict().items()} for m in models]
    for m in models:
        m.eval()
    seed_all(seed)
    try:
        return ancestral_sample(models, n, latent_dim, lv, batch_size, progress=False)
    finally:
        for m, mode, state in zip(models, modes, states):
            m.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
            m.train() if mode else m.eval()


def interpolate(models: Models, latent_dim: int, lv: LangevinConfig, pairs: int = 8,
                points: int = 8) -> Pair:
    """Linear paths z(t) = (1 - t) z_a + t z_b, t in [0, 1], for `pairs` random (z_a, z_b):
    decoded and Langevin-revised, row-major ([pairs * points, C, H, W], one path per row)."""
    z_a, z_b = paddle.randn([pairs, 1, latent_dim]), paddle.randn([pairs, 1, latent_dim])
    t = paddle.linspace(0.0, 1.0, points).reshape([1, points, 1])
    z = ((1 - t) * z_a + t * z_b).reshape([pairs * points, latent_dim])
    with paddle.no_grad():
        decoded = models.decoder(z)
    revised = langevin(models.ebm, decoded, lv)
    return Pair(decoded.numpy(), revised.numpy())


def reconstruct(models: Models, images: np.ndarray, lv: LangevinConfig, use_mean: bool = True,
                batch_size: int = 100, progress: bool = True) -> Pair:
    """x -> q_phi(z|x) -> g_alpha(z) -> Langevin. z = mu(x) (use_mean) or the reparameterised
    sample mu + sigma * eps (the released code's `reconstruction()`)."""
    decoded, revised = [], []
    bar = Progress(len(images), desc="reconstruct", enabled=progress)
    for start in range(0, len(images), batch_size):
        x = paddle.to_tensor(images[start:start + batch_size])
        with paddle.no_grad():
            mu, log_sigma = models.encoder(x)
            z = mu if use_mean else mu + paddle.randn(mu.shape) * paddle.exp(log_sigma)
            x_hat = models.decoder(z)
        decoded.append(x_hat.numpy())
        revised.append(langevin(models.ebm, x_hat, lv).numpy())
        bar.update(start + len(x), force=start + len(x) == len(images))
    bar.close()
    return Pair(np.concatenate(decoded), np.concatenate(revised))
