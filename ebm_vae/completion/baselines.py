"""Reference fills that give the completion numbers context (all paste the visible pixels back).

- `mean_fill`: each channel's mean over the visible pixels.
- `harmonic_fill`: the discrete Laplace equation inside the hole with the visible pixels as
  boundary values (smooth diffusion from the hole's border).
- `unconditional_fill`: a generation run (tools/train.py) used as in the released code's
  inpaint demo [CODE]: encode the masked image, decode, revise by Langevin under f, paste.
- `nearest_fill`: the hole of the training image whose visible pixels are closest (L2, over
  the same visible pixels): real photo content, as sharp as the data, placed by retrieval.
"""
from __future__ import annotations

import numpy as np
import paddle
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ebm_vae.completion.masks import FillError, apply_mask, paste
from ebm_vae.core.config import Config
from ebm_vae.core.langevin import langevin
from ebm_vae.core.models import Models


def mean_fill(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    visible = np.broadcast_to(1.0 - masks, images.shape)
    means = (images * visible).sum(axis=(2, 3)) / np.maximum(visible.sum(axis=(2, 3)), 1.0)
    return paste(np.broadcast_to(means[:, :, None, None], images.shape), images, masks)


def _harmonic(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Solve 4-neighbour Laplace(u) = 0 on the hole, u = image on visible neighbours; image
    borders are reflecting (a missing neighbour drops out of the stencil)."""
    h, w = hole.shape
    ys, xs = np.nonzero(hole)
    k = len(ys)
    index = -np.ones((h, w), np.int64)
    index[ys, xs] = np.arange(k)
    diag = np.zeros(k)
    rows, cols = [], []
    rhs = np.zeros((k, image.shape[0]))
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diag += inside
        i, ny, nx = np.nonzero(inside)[0], ny[inside], nx[inside]
        in_hole = hole[ny, nx]
        rows.append(i[in_hole])
        cols.append(index[ny[in_hole], nx[in_hole]])
        np.add.at(rhs, i[~in_hole], image[:, ny[~in_hole], nx[~in_hole]].T)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    a = sp.csr_matrix((np.concatenate([diag, -np.ones(len(rows))]),
                       (np.concatenate([np.arange(k), rows]), np.concatenate([np.arange(k), cols]))),
                      shape=(k, k))
    out = image.copy()
    out[:, ys, xs] = spla.spsolve(a.tocsc(), rhs).reshape(k, -1).T
    return out


def harmonic_fill(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    out = images.copy()
    for i, (image, mask) in enumerate(zip(images, masks)):
        hole = mask[0] > 0.5
        if hole.any() and not hole.all():
            out[i] = _harmonic(image.astype(np.float64), hole)
    return out.astype(images.dtype)


def nearest_fill(train: np.ndarray, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Fill each hole with the same pixels of the training image nearest in the visible pixels."""
    out = []
    flat_train = train.reshape(len(train), -1).astype(np.float64)
    for image, mask in zip(images, masks):
        visible = np.broadcast_to(1.0 - mask, image.shape).reshape(-1)
        gaps = ((flat_train - image.reshape(-1)) ** 2 * visible).sum(axis=1)
        out.append(train[int(np.argmin(gaps))])
    return paste(np.stack(out).astype(images.dtype), images, masks)


def unconditional_fill(cfg: Config, models: Models, images: np.ndarray, masks: np.ndarray,
                       batch_size: int = 64) -> np.ndarray:
    """[CODE] inpaint(): x_hat = g(mu(masked x)), Langevin under f (`cfg.sample.steps`), paste."""
    expect = (cfg.model.channels, cfg.model.image_size, cfg.model.image_size)
    if tuple(images.shape[1:]) != expect:
        raise FillError(f"the unconditional model works on {expect} images, the test images are "
                         f"{tuple(images.shape[1:])}")
    lv, out = cfg.langevin, []
    for i in range(0, len(images), batch_size):
        x = paddle.to_tensor(apply_mask(images[i:i + batch_size], masks[i:i + batch_size]))
        with paddle.no_grad():
            x_hat = models.decoder(models.encoder(x)[0])
        out.append(langevin(models.ebm, x_hat, lv, cfg.sample.steps).numpy())
    return paste(np.clip(np.concatenate(out), -1.0, 1.0), images, masks)
