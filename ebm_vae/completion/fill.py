"""Filling holes with a trained completion model: z ~ N(0, I), y_hat = g(z, c), Langevin on y
given c (core's `revise` with the condition), visible pixels pasted back."""
from __future__ import annotations

from typing import Optional

import numpy as np
import paddle

from ebm_vae.completion.masks import paste
from ebm_vae.completion.networks import ConditionalModels, condition
from ebm_vae.core.config import LangevinConfig
from ebm_vae.core.sampling import with_steps
from ebm_vae.core.teach import revise
from ebm_vae.utils.memory import check_fits


def complete(models: ConditionalModels, images: np.ndarray, masks: np.ndarray, latent_dim: int,
             steps: int, lv: LangevinConfig, batch_size: int = 64, with_proposal: bool = False):
    """Fill the holes: z ~ N(0, I), y_hat = g(z, c), `steps` Langevin steps on y given c, then the
    visible pixels pasted back. Float [-1, 1] in and out. `with_proposal`: also return the cVAE's
    fill before revision, (proposal, revised)."""
    proposals, out, lv = [], [], with_steps(lv, steps)
    for i in range(0, len(images), batch_size):
        c = condition(paddle.to_tensor(images[i:i + batch_size]),
                      paddle.to_tensor(masks[i:i + batch_size]))
        y_hat, y_tilde = revise(models, len(c), latent_dim, lv, c)  # Algorithm 1, steps 1-3
        proposals.append(y_hat.numpy())
        out.append(y_tilde.numpy())
    revised = paste(np.clip(np.concatenate(out), -1.0, 1.0), images, masks)
    if not with_proposal:
        return revised
    return paste(np.clip(np.concatenate(proposals), -1.0, 1.0), images, masks), revised


def ebm_mean_fill(models: ConditionalModels, images: np.ndarray, masks: np.ndarray,
                  batch_size: int = 64) -> Optional[np.ndarray]:
    """The EBM's Gaussian mean mu_theta(c) pasted into the hole (an ablation: no sampler, no
    Langevin), or None if f has no Gaussian term."""
    if models.ebm.mean is None:
        return None
    out = []
    for i in range(0, len(images), batch_size):
        c = condition(paddle.to_tensor(images[i:i + batch_size]),
                      paddle.to_tensor(masks[i:i + batch_size]))
        with paddle.no_grad():
            out.append(models.ebm.mean_image(c).numpy())
    return paste(np.clip(np.concatenate(out), -1.0, 1.0), images, masks)


def complete_k(models: ConditionalModels, images: np.ndarray, masks: np.ndarray, k: int,
               latent_dim: int, steps: int, lv: LangevinConfig, batch_size: int = 64
               ) -> tuple[np.ndarray, np.ndarray]:
    """`k` fills per hole, each with its own z and Langevin noise: (proposals, revised), both
    [k, N, C, H, W]. Refused in one line when they would not fit in free memory."""
    check_fits(4 * k * images.astype(np.float32, copy=False).nbytes,
               f"{k} fills of {len(images)} images (with their proposals, float32)",
               "ask for fewer fills (--samples) or images (--limit)")
    runs = [complete(models, images, masks, latent_dim, steps, lv, batch_size, with_proposal=True)
            for _ in range(k)]
    return np.stack([r[0] for r in runs]), np.stack([r[1] for r in runs])
