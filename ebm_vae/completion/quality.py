"""Completion metrics that see blur, over a whole evaluation (docs/completion.md): the sharpness
ratio of each method's fills and the Inception FID of completed test images against the real
test images, with several seeded holes per image.

FID protocol: each of the N test images gets `holes` holes (seeds seed, seed + 1, ...; the
first set is the one the hole metrics use), each method fills all of them: N x holes completed
images against the N real images' pool3 statistics (64x64 images upsampled to 299 as the
Inception path does). With so few images FID is biased upwards, but by the same protocol for
every method on the same holes, so differences between methods are fair; absolute values are
not comparable to FIDs of other protocols.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ebm_vae.eval.image_metrics import sharpness_ratio
from ebm_vae.eval.inception import InceptionWeightsError, inception_outputs, load_inception
from ebm_vae.eval.metrics import FeatureStats, feature_stats, frechet_distance

Features = Callable[[np.ndarray], np.ndarray]  # images [N, C, H, W] in [-1, 1] -> [N, D]
FillAll = Callable[[np.ndarray], dict[str, np.ndarray]]  # masks -> {method: completed images}


def sharpness(fills: dict[str, np.ndarray], truth: np.ndarray, masks: np.ndarray
              ) -> dict[str, float]:
    """{method: sharpness_ratio of its fills} on one set of holes."""
    return {name: sharpness_ratio(f, truth, masks) for name, f in fills.items()}


def inception_features(weights: Optional[str] = None) -> tuple[Optional[Features], str]:
    """The FID Inception pool3 feature function, or (None, why) when no weights are installed."""
    try:
        net = load_inception(weights)
    except InceptionWeightsError as err:
        return None, str(err)
    return (lambda images: inception_outputs(net, images, probs=False)[0]), net.weights_file


def completion_fid(fill_all: FillAll, masks: list[np.ndarray], real: np.ndarray,
                   features: Features) -> dict[str, dict[str, float | int]]:
    """{method: {"fid", "n_completed", "n_real"}}: the FID of every method's completions of the
    real images over all hole sets `masks` (each [N, 1, H, W]) against the real images."""
    reference = feature_stats(features(real)).with_sqrt()
    completed: dict[str, list[np.ndarray]] = {}
    for m in masks:
        for name, filled in fill_all(m).items():
            completed.setdefault(name, []).append(features(filled))
    return {name: _fid(np.concatenate(f), reference) for name, f in completed.items()}


def _fid(feats: np.ndarray, reference: FeatureStats) -> dict[str, float | int]:
    return {"fid": frechet_distance(feature_stats(feats), reference), "n_completed": len(feats),
            "n_real": reference.n}
