"""Completion metrics that see blur, over a whole evaluation (docs/completion.md): the sharpness
ratio of each method's fills and the Inception FID of completed test images against the real
test images, with several seeded holes per image; and the hole FID, the same on the hole's
surroundings alone.

FID protocol: each of the N test images gets `holes` holes (seeds seed, seed + 1, ...; the
first set is the one the hole metrics use), each method fills all of them: N x holes completed
images against the N real images' pool3 statistics (64x64 images upsampled to 299 as the
Inception path does). With so few images FID is biased upwards, but by the same protocol for
every method on the same holes, so differences between methods are fair; absolute values are
not comparable to FIDs of other protocols. With the visible three quarters of a 64x64 picture
shared by every method, the whole-image FID barely sees the hole (a flat mean fill ties the best
method): the hole FID compares crops of the hole's bounding box widened by a quarter of its
size on each side (the fill and its seam) against the same crops of the real images.
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


def hole_crops(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Each image's crop around its hole: the hole's bounding box widened by a quarter of its
    height and width on each side (clipped to the image, shifted to keep its size). Every hole
    of `masks` must have the same bounding-box size (true of square, centre and file masks)."""
    boxes = []
    for mask in masks:
        ys, xs = np.nonzero(mask[0] > 0.5)
        boxes.append((ys.min(), ys.max() + 1, xs.min(), xs.max() + 1))
    sizes = {(b[1] - b[0], b[3] - b[2]) for b in boxes}
    if len(sizes) != 1:
        raise ValueError(f"hole FID needs holes of one size, got {sorted(sizes)}")
    (h, w), (height, width) = sizes.pop(), images.shape[2:]
    ch, cw = min(h + 2 * (h // 4), height), min(w + 2 * (w // 4), width)
    crops = []
    for image, (top, _, left, _) in zip(images, boxes):
        y = min(max(top - h // 4, 0), height - ch)
        x = min(max(left - w // 4, 0), width - cw)
        crops.append(image[:, y:y + ch, x:x + cw])
    return np.stack(crops)


def completion_fid(fill_all: FillAll, masks: list[np.ndarray], real: np.ndarray,
                   features: Features) -> dict[str, dict[str, dict[str, float | int]]]:
    """{"image": {method: {"fid", "n_completed", "n_real"}}, "hole": {...}}: the FID of every
    method's completions of the real images over all hole sets `masks` (each [N, 1, H, W])
    against the real images, and the FID of their `hole_crops` against the real images' crops
    at the same holes."""
    reference = feature_stats(features(real)).with_sqrt()
    real_crops = np.concatenate([features(hole_crops(real, m)) for m in masks])
    hole_reference = feature_stats(real_crops).with_sqrt()
    completed: dict[str, list[np.ndarray]] = {}
    crops: dict[str, list[np.ndarray]] = {}
    for m in masks:
        for name, filled in fill_all(m).items():
            completed.setdefault(name, []).append(features(filled))
            crops.setdefault(name, []).append(features(hole_crops(filled, m)))
    return {"image": {name: _fid(np.concatenate(f), reference) for name, f in completed.items()},
            "hole": {name: _fid(np.concatenate(f), hole_reference) for name, f in crops.items()}}


def _fid(feats: np.ndarray, reference: FeatureStats) -> dict[str, float | int]:
    return {"fid": frechet_distance(feature_stats(feats), reference), "n_completed": len(feats),
            "n_real": reference.n}
