"""Metric math (numpy/scipy only): Frechet distance of feature statistics, Inception Score, PSNR.

FID (Heusel et al. 2017): d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}) between the
Gaussians fitted to two sets of features. The same formula serves the standard Inception FID and the
offline classifier-feature FID; only the feature extractor differs.
IS (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), averaged over 10 splits.
MSE / PSNR of reconstructions (latent expressiveness).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
from scipy import linalg

from ebm_vae.eval.image_metrics import psnr
from ebm_vae.utils.atomic import atomic_write


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of a set of features (what FID compares), how many there were, and
    optionally the covariance's square root (`with_sqrt`: computed once for a reference)."""
    mu: np.ndarray
    sigma: np.ndarray
    n: int
    sigma_sqrt: Optional[np.ndarray] = None

    def with_sqrt(self) -> "FeatureStats":
        """These statistics with `sigma_sqrt` (kept if already there)."""
        return self if self.sigma_sqrt is not None else replace(self, sigma_sqrt=psd_sqrt(self.sigma))

    def save(self, path: str | Path, **meta: str) -> None:
        """Write an .npz (keys mu, sigma, n, sigma_sqrt if known, and string metadata), atomically."""
        root = {} if self.sigma_sqrt is None else {"sigma_sqrt": self.sigma_sqrt}
        with atomic_write(path, "wb") as fh:
            np.savez(fh, mu=self.mu, sigma=self.sigma, n=self.n, **root,
                     **{k: np.array(v) for k, v in meta.items()})

    @staticmethod
    def load(path: str | Path) -> tuple["FeatureStats", dict[str, str]]:
        """Read statistics written by `save` (or any .npz with `mu` and `sigma`) and its metadata."""
        with np.load(path) as f:
            if "mu" not in f or "sigma" not in f:
                raise ValueError(f"{path} is not a statistics file (needs arrays 'mu' and 'sigma')")
            meta = {k: str(f[k]) for k in f.files if k not in ("mu", "sigma", "n", "sigma_sqrt")}
            n = int(f["n"]) if "n" in f else -1
            root = f["sigma_sqrt"].astype(np.float64) if "sigma_sqrt" in f else None
            return FeatureStats(f["mu"].astype(np.float64), f["sigma"].astype(np.float64), n,
                                root), meta


def feature_stats(features: np.ndarray) -> FeatureStats:
    """Fit mean and (unbiased) covariance to features [N, D]."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"need features [N >= 2, D], got shape {feats.shape}")
    return FeatureStats(feats.mean(axis=0), np.cov(feats, rowvar=False), len(feats))


def psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance (eigenvalues below 0 by rounding taken as 0)."""
    w, v = linalg.eigh(np.atleast_2d(sigma))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrt(S_a S_b)) (FID, Heusel et al. 2017 eq. 6).

    Tr sqrt(S_a S_b) is the sum of the square roots of the eigenvalues of R S_a R with R = S_b^(1/2)
    (the same eigenvalues as S_a S_b; symmetric, so no complex round-off and no ε for singular
    covariances). R is `b.sigma_sqrt` when known (a cached reference), else computed: with it a
    2048-d FID is two products and one symmetric eigenvalue problem, several times faster than
    the reference code's `scipy.linalg.sqrtm` (same value up to round-off).
    """
    mu_a, mu_b = np.atleast_1d(a.mu), np.atleast_1d(b.mu)
    s_a, s_b = np.atleast_2d(a.sigma), np.atleast_2d(b.sigma)
    if mu_a.shape != mu_b.shape or s_a.shape != s_b.shape:
        raise ValueError(f"feature dimensions differ: {mu_a.shape} vs {mu_b.shape}")
    diff = mu_a - mu_b
    root = np.atleast_2d(b.with_sqrt().sigma_sqrt)
    product = root @ s_a @ root
    trace_sqrt = np.sqrt(np.clip(linalg.eigvalsh((product + product.T) / 2), 0.0, None)).sum()
    return float(diff.dot(diff) + np.trace(s_a) + np.trace(s_b) - 2.0 * trace_sqrt)


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
