"""Test-time use of a trained run: ancestral Langevin sampling, interpolation, reconstruction.

Ancestral Langevin sampling [PAPER]: z ~ N(0, I) -> x_hat = g_alpha(z) -> L steps of eq. (L) under
f_theta (L = `sample.steps`, 30 in the released code). Work is done in batches of `batch_size`
chains (default: the training `num_chains`, since the decoder's batch norm uses batch statistics).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import numpy as np
import paddle

from .checkpoint import load_checkpoint, load_layer_states
from .config import Config, LangevinConfig, load_config
from .langevin import langevin
from .models import Models, build_models
from .progress import Progress
from .runtime import configure_runtime, seed_all
from .teach import revise
from .train import CHECKPOINT


class Run(NamedTuple):
    cfg: Config
    models: Models
    iteration: int  # 0 for an untrained model


def load_run(run_dir: str | Path, untrained: bool = False, device: str | None = None) -> Run:
    """Models of a run folder (config.yaml + checkpoints/last.ckpt), in eval mode, on `device`
    (default: the config's).

    `untrained=True` builds the run's architecture at its seeded initialisation instead (a
    reference point for metrics: what training starts from).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: {run_dir / 'config.yaml'} not found")
    cfg = load_config(run_dir / "config.yaml")
    configure_runtime(device or cfg.device)
    seed_all(cfg.seed)
    models = build_models(cfg.model)
    iteration = 0
    if not untrained:
        state = load_checkpoint(run_dir / CHECKPOINT)
        load_layer_states(models._asdict(), state["modules"])
        iteration = state["iteration"]
    for layer in models:
        layer.eval()  # no dropout; batch norm as configured (bn_batch_stats keeps batch statistics)
    return Run(cfg, models, iteration)


def with_steps(lv: LangevinConfig, steps: int) -> LangevinConfig:
    return dataclasses.replace(lv, steps=steps)


class Pair(NamedTuple):
    """Images before and after Langevin revision, [N, C, H, W] float32 in about [-1, 1]."""
    proposals: np.ndarray
    revised: np.ndarray


def ancestral_sample(models: Models, n: int, latent_dim: int, lv: LangevinConfig,
                     batch_size: int, progress: bool = True) -> Pair:
    """n samples z ~ N(0, I) -> g_alpha(z) -> `lv.steps` Langevin steps, `batch_size` at a time."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got {n} and {batch_size}")
    proposals, revised = [], []
    bar = Progress(n, desc="sampling", enabled=progress)
    done = 0
    while done < n:
        x_hat, x_tilde = revise(models, min(batch_size, n - done), latent_dim, lv)
        proposals.append(x_hat.numpy())
        revised.append(x_tilde.numpy())
        done += len(x_hat)
        bar.update(done, force=done == n)
    bar.close()
    return Pair(np.concatenate(proposals), np.concatenate(revised))


def interpolate(models: Models, latent_dim: int, lv: LangevinConfig, pairs: int = 8,
                points: int = 8) -> Pair:
    """Linear paths z(t) = (1 - t) z_a + t z_b, t in [0, 1], for `pairs` random (z_a, z_b):
    decoded and Langevin-revised, row-major ([pairs * points, C, H, W], one path per row)."""
    z_a, z_b = paddle.randn([pairs, 1, latent_dim]), paddle.randn([pairs, 1, latent_dim])
    t = paddle.linspace(0.0, 1.0, points).reshape([1, points, 1])
    z = ((1 - t) * z_a + t * z_b).reshape([pairs * points, latent_dim])
    with paddle.no_grad():
        decoded = models.decoder(z)
    revised = langevin(models.ebm, decoded, lv.steps, lv.step_size, lv.ref_sigma, lv.noise,
                       lv.chunk_size)
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
        revised.append(langevin(models.ebm, x_hat, lv.steps, lv.step_size, lv.ref_sigma, lv.noise,
                                lv.chunk_size).numpy())
        bar.update(start + len(x), force=start + len(x) == len(images))
    bar.close()
    return Pair(np.concatenate(decoded), np.concatenate(revised))
