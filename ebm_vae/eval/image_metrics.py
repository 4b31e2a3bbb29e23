"""Completion quality: PSNR, SSIM and L1, over the whole image or over the hole only, and the
sharpness of a fill (its gradient magnitude in the hole against the truth's).

Inputs are [N, C, H, W] images in [-1, 1]; they are mapped to [0, 1] first (the usual 8-bit
convention: data range 1), and every metric is returned per image.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

PSNR_CAP_DB = 100.0  # PSNR of identical images (infinite) is reported as this cap
SSIM_SIGMA = 1.5  # Wang et al. (2004): 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03
SSIM_TRUNCATE = 3.5  # radius 5 at sigma 1.5, i.e. the 11x11 window (as scikit-image)
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _unit(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, np.float64) + 1.0) / 2.0


def _region(x: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    """Per-pixel weights [N, C, H, W]: the hole (mask 1), or every pixel without a mask."""
    if masks is None:
        return np.ones_like(x)
    w = np.broadcast_to(np.asarray(masks, np.float64), x.shape)
    if (w.reshape(len(w), -1).sum(axis=1) == 0).any():
        raise ValueError("a mask has an empty hole: the metric over the hole is undefined")
    return w


def _mean(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (values * w).reshape(len(w), -1).sum(axis=1) / w.reshape(len(w), -1).sum(axis=1)


def l1(x: np.ndarray, y: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    """Mean absolute error in [0, 1] units."""
    x, y = _unit(x), _unit(y)
    return _mean(np.abs(x - y), _region(x, masks))


def psnr(x: np.ndarray, y: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    """10 log10(1 / MSE) in dB (data range 1), capped at PSNR_CAP_DB."""
    x, y = _unit(x), _unit(y)
    mse = _mean((x - y) ** 2, _region(x, masks))
    with np.errstate(divide="ignore"):
        return np.minimum(10.0 * np.log10(1.0 / mse), PSNR_CAP_DB)


def ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM at every pixel (Wang et al. 2004), Gaussian-weighted local statistics per channel,
    with reflected borders: [N, C, H, W]."""
    x, y = _unit(x), _unit(y)
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2  # (K L)^2 with data range L = 1

    def blur(a: np.ndarray) -> np.ndarray:
        return gaussian_filter(a, sigma=(0, 0, SSIM_SIGMA, SSIM_SIGMA), mode="reflect",
                               truncate=SSIM_TRUNCATE)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))


def ssim(x: np.ndarray, y: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    """Mean SSIM over the image, or over the hole pixels (windows centred in the hole)."""
    m = ssim_map(x, y)
    return _mean(m, _region(m, masks))


def completion_metrics(filled: np.ndarray, truth: np.ndarray, masks: np.ndarray
                       ) -> dict[str, np.ndarray]:
    """Per-image PSNR, SSIM and L1 over the hole and over the whole image."""
    return {"psnr_hole": psnr(filled, truth, masks), "ssim_hole": ssim(filled, truth, masks),
            "l1_hole": l1(filled, truth, masks), "psnr_image": psnr(filled, truth),
            "ssim_image": ssim(filled, truth), "l1_image": l1(filled, truth)}


def hole_gradient(x: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean gradient magnitude inside the hole, per image, in [0, 1] units per pixel.

    At pixel (i, j): sqrt((x[i, j+1] - x[i, j])^2 + (x[i+1, j] - x[i, j])^2) per channel (forward
    differences), averaged over the channels and over the pixels whose stencil (i, j), (i, j+1),
    (i+1, j) lies wholly in the hole, so visible pixels never enter. NaN for a hole without
    such a pixel."""
    x = _unit(x)
    m = np.asarray(masks, np.float64)[:, 0] > 0.5
    inside = m[:, :-1, :-1] & m[:, :-1, 1:] & m[:, 1:, :-1]
    gx, gy = x[:, :, :-1, 1:] - x[:, :, :-1, :-1], x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    mag = np.sqrt(gx ** 2 + gy ** 2).mean(axis=1)
    count = inside.reshape(len(x), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (mag * inside).reshape(len(x), -1).sum(axis=1) / count


def sharpness_ratio(filled: np.ndarray, truth: np.ndarray, masks: np.ndarray) -> float:
    """How sharp the fills are against the truth over a set: the ratio of the means over the
    images of `hole_gradient` (fill over truth; images without a full stencil in the hole
    skipped). 1 = as much local contrast as the photos, below 1 = blurrier, above = noisier."""
    g_fill, g_truth = hole_gradient(filled, masks), hole_gradient(truth, masks)
    ok = np.isfinite(g_truth)
    if not ok.any():
        raise ValueError("no hole holds a full gradient stencil: sharpness is undefined")
    return float(g_fill[ok].mean() / g_truth[ok].mean())
