"""FID's reference side: Inception pool3 statistics of a real split, computed once and cached.

A statistics file records what it was computed from: the Inception weights (the SHA-256 of the
.pdparams, hashed once per file version, see `ebm_vae.utils.cache.file_sha256`), the dataset, the
split and the number of images asked for (`all`, or N chosen by `datasets.subset`). It is reused only while all of
them match; other weights or another count are computed (and cached) anew. The default place is
<cache>/fid_stats/inception_<dataset>_<split>_<count>_<weights hash>.npz.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Union

from ebm_vae.data import datasets
from ebm_vae.errors import UserError
from ebm_vae.eval.inception import FIDInceptionV3, inception_outputs, load_inception
from ebm_vae.eval.metrics import FeatureStats, feature_stats
from ebm_vae.utils.cache import cache_dir

STATS_DIR = "fid_stats"


class ReferenceStatsError(UserError, ValueError):
    """Reference statistics that cannot be used with these Inception weights."""


def reference_key(net, dataset: str, split: str, n: Optional[int]) -> dict[str, str]:
    """What cached statistics must have been computed from to be reused."""
    if not getattr(net, "weights_sha256", None):
        raise ReferenceStatsError("cached reference statistics need Inception weights loaded from "
                                  "a file (load_inception); give the statistics instead")
    if n is not None and n < 2:
        raise ReferenceStatsError(f"reference statistics need at least 2 images, not {n}")
    return {"weights_sha256": net.weights_sha256, "dataset": dataset, "split": split,
            "count": "all" if n is None else str(n), "selection": "subset_seed0"}


def reference_path(key: dict[str, str]) -> Path:
    """The cache file of a `reference_key`."""
    name = f"inception_{key['dataset']}_{key['split']}_{key['count']}_{key['weights_sha256'][:16]}"
    return cache_dir() / STATS_DIR / f"{name}.npz"


def _cached(path: Path, key: dict[str, str]) -> Optional[FeatureStats]:
    """The statistics at `path` if they were computed from `key`, else None."""
    if not path.is_file():
        return None
    try:
        stats, meta = FeatureStats.load(path)
    except (OSError, ValueError):  # damaged or foreign: computed anew
        return None
    return stats if all(meta.get(k) == v for k, v in key.items()) else None


def check_weights(path: str | Path, net) -> FeatureStats:
    """Statistics from a given file, refused if it records other Inception weights than `net`'s
    (a file without that record, e.g. from another tool, is taken as it is)."""
    try:
        stats, meta = FeatureStats.load(path)
    except (OSError, ValueError) as err:  # unreadable, or not a statistics file
        raise ReferenceStatsError(f"cannot read reference statistics {path}: {err}") from err
    recorded, ours = meta.get("weights_sha256"), getattr(net, "weights_sha256", None)
    if recorded and ours and recorded != ours:
        raise ReferenceStatsError(f"{path} was computed with other Inception weights (sha256 "
                                  f"{recorded[:12]}, not {ours[:12]} of {net.weights_file})")
    return stats.with_sqrt()


def reference_stats(net, dataset: str, root: Optional[str], split: str, n: Optional[int] = None,
                    out: Optional[Path] = None, progress: bool = True) -> tuple[FeatureStats, Path]:
    """Inception statistics of `n` (None: all) images of a split (`datasets.subset`): read from `out`
    (default: the cache) if they were computed with these weights and this count, else computed
    in batches (with a progress bar) and written there, with the covariance's square root that
    every FID against them uses. Returns them and the file."""
    key = reference_key(net, dataset, split, n)
    path = Path(out) if out else reference_path(key)
    stats = _cached(path, key)
    if stats is None:
        images = datasets.subset(datasets.load_split(dataset, root, split)[0], n)
        print(f"Inception reference statistics of {len(images)} {dataset} {split} images -> "
              f"{path} (computed once for these weights and this count)", file=sys.stderr)
        feats = inception_outputs(net, images, progress=progress, probs=False)[0]
        stats = feature_stats(feats).with_sqrt()
        stats.save(path, **key)
    return stats.with_sqrt(), path


def write_inception_stats(dataset: str, root: Optional[str], split: str,
                          inception: Union[str, FIDInceptionV3, None], out: Optional[Path] = None,
                          progress: bool = True, n: Optional[int] = None) -> tuple[Path, int]:
    """Inception pool3 statistics of `n` (None: all) images of a split (FID's
    reference) at `out` (default: the cache, where `prerequisites` finds them), computed unless
    they are there for these weights and this count; returns the path and the image count."""
    net = inception if isinstance(inception, FIDInceptionV3) else load_inception(inception)
    stats, path = reference_stats(net, dataset, root, split, n, out, progress)
    return path, stats.n
