"""Metric math (numpy/scipy only): Frechet distance of feature statistics, Inception Score, PSNR.

FID (Heusel et al. 2017): d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}) between the
Gaussians fitted to two sets of features. The same formula serves the standard Inception FID and the
offline classifier-feature FID; only the feature extractor differs.
IS (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), averaged over 10 splits.
MSE / PSNR of reconstructions (latent expressiveness).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import linalg

from ebm_vae.eval.image_metrics import psnr
from ebm_vae.utils.atomic import atomic_write


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of a set of features (what FID compares), and how many there were."""
    mu: np.ndarray
    sigma: np.ndarray
    n: int

    def save(self, path: str | Path, **meta: str) -> None:
        """Write an .npz (keys mu, sigma, n and string metadata), atomically."""
        with atomic_write(path, "wb") as fh:
            np.savez(fh, mu=self.mu, sigma=self.sigma, n=self.n,
                     **{k: np.array(v) for k, v in meta.items()})

    @staticmethod
    def load(path: str | Path) -> tuple["FeatureStats", dict[str, str]]:
        """Read statistics written by `save` (or any .npz with `mu` and `sigma`) and its metadata."""
        with np.load(path) as f:
            if "mu" not in f or "sigma" not in f:
                raise ValueError(f"{path} is not a statistics file (needs arrays 'mu' and 'sigma')")
            meta = {k: str(f[k]) for k in f.files if k not in ("mu", "sigma", "n")}
            n = int(f["n"]) if "n" in f else -1
            return FeatureStats(f["mu"].astype(np.float64), f["sigma"].astype(np.float64), n), meta


def feature_stats(features: np.ndarray) -> FeatureStats:
    """Fit mean and (unbiased) covariance to features [N, D]."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"need features [N >= 2, D], got shape {feats.shape}")
    return FeatureStats(feats.mean(axis=0), np.cov(feats, rowvar=False), len(feats))


def frechet_distance(a: FeatureStats, b: FeatureStats, eps: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrt(S_a S_b)) (FID, Heusel et al. 2017 eq. 6).

    A singular product gets `eps` added to both diagonals; a numerically complex square root
    is accepted only if its diagonal's imaginary part is negligible (as the reference code).
    """
    mu_a, mu_b = np.atleast_1d(a.mu), np.atleast_1d(b.mu)
    s_a, s_b = np.atleast_2d(a.sigma), np.atleast_2d(b.sigma)
    if mu_a.shape != mu_b.shape or s_a.shape != s_b.shape:
        raise ValueError(f"feature dimensions differ: {mu_a.shape} vs {mu_b.shape}")
    diff = mu_a - mu_b
    with warnings.catch_warnings():  # near-singular products are expected; handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s_a.dot(s_b))
        if not np.isfinite(covmean).all():
            offset = np.eye(len(s_a)) * eps
            covmean = linalg.sqrtm((s_a + offset).dot(s_b + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrt(S_a S_b) has an imaginary part of "
                             f"{np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Mean and std over `splits` consecutive parts of exp(mean_x KL(p(y|x) || p(y)))."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) < splits:
        raise ValueError(f"need class probabilities [N >= splits={splits}, K], got {p.shape}")
    size = len(p) // splits
    scores = []
    for k in range(splits):
        part = p[k * size:(k + 1) * size]
        marginal = part.mean(axis=0, keepdims=True)
        # KL(p(y|x) || p(y)) with 0 log 0 = 0
        kl = np.where(part > 0, part * (np.log(np.maximum(part, 1e-300)) - np.log(np.maximum(marginal, 1e-300))), 0.0)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def mse_psnr(images: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Per-pixel MSE and mean per-image PSNR (dB) of images clipped to [-1, 1], both on the
    [0, 1] scale (data range 1, as ebm_vae.eval.image_metrics)."""
    a, b = np.clip(images, -1.0, 1.0), np.clip(targets, -1.0, 1.0)
    mse = ((a.astype(np.float64) - b) / 2.0) ** 2
    return float(mse.mean()), float(psnr(a, b).mean())
