"""A small CNN classifier trained on a dataset's own labels: the feature space of the offline FID.

"Classifier FID" = the Frechet distance (ebm_vae.eval.metrics) between the statistics of this network's
128-d penultimate features (global average pool of the last conv) of generated and real images.
It needs no download, so it works on a laptop and in tests, but it is NOT comparable to the
Inception FIDs of papers: use it to compare runs, checkpoints and samplers with each other.

The checkpoint is a folder in the run checkpoints' format (ebm_vae.training.checkpoints), e.g.
`RUN/classifier/`: net.pdparams (the weights), stats.pdparams (each split's feature mean and
covariance, float64: the FID references) and state.json (the dataset name, the image shape, the
test accuracy and each split's image count). An old single-file `.ckpt` is refused with the hint
to convert it (tools/convert_run.py, which calls `convert_classifier`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ebm_vae.training.checkpoints import LegacyFormatError, legacy_file, read_folder, replace_folder
from ebm_vae.training.states import CheckpointError
from ebm_vae.errors import UserError
from ebm_vae.eval.metrics import FeatureStats, feature_stats, frechet_distance
from ebm_vae.utils.progress import Progress

FEATURE_DIM = 128
NUM_CLASSES = 10
NET, STATS = "net", "stats"  # the folder's tensor files: net.pdparams, stats.pdparams


class ClassifierError(UserError, FileNotFoundError):
    """The classifier checkpoint is missing or does not fit the data."""


class Classifier(nn.Layer):
    """conv32/2 -> conv64/2 -> conv128 (3x3, ReLU) -> global average pool (the features) ->
    linear class logits. Small on purpose: a few CPU minutes per MNIST epoch."""

    def __init__(self, channels: int, num_classes: int = NUM_CLASSES):
        super().__init__()
        layers: list[nn.Layer] = []
        for cin, cout, stride in [(channels, 32, 2), (32, 64, 2), (64, FEATURE_DIM, 1)]:
            layers += [nn.Conv2D(cin, cout, 3, stride, padding=1), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.convs(x).mean(axis=[2, 3])

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.head(self.features(x))


def quantize(images: np.ndarray) -> np.ndarray:
    """Clip to [-1, 1] and round to 8-bit levels, as saved images (real data already is)."""
    return (np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0).astype(np.float32)


def _batches(n: int, batch_size: int):
    return (slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size))


def predict(net: Classifier, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Features [N, 128] (float64) and predicted labels [N] of images [N, C, H, W] in [-1, 1]."""
    net.eval()
    feats, labels = [], []
    with paddle.no_grad():
        for sl in _batches(len(images), batch_size):
            h = net.features(paddle.to_tensor(quantize(images[sl])))
            feats.append(h.numpy().astype(np.float64))
            labels.append(net.head(h).argmax(axis=1).numpy())
    return np.concatenate(feats), np.concatenate(labels)


def train_classifier(images: np.ndarray, labels: np.ndarray, epochs: int = 1, batch_size: int = 128,
                     lr: float = 1e-3, seed: int = 0, progress: bool = True) -> Classifier:
    """Adam on cross-entropy, a seeded shuffle each epoch."""
    paddle.seed(seed)
    net = Classifier(images.shape[1], int(labels.max()) + 1)
    opt = paddle.optimizer.Adam(lr, parameters=net.parameters())
    rng = np.random.default_rng(seed)
    steps = epochs * -(-len(images) // batch_size)
    bar = Progress(steps, desc="classifier", enabled=progress)
    done = 0
    net.train()
    for _ in range(epochs):
        order = rng.permutation(len(images))
        for sl in _batches(len(images), batch_size):
            idx = order[sl]
            loss = F.cross_entropy(net(paddle.to_tensor(images[idx])), paddle.to_tensor(labels[idx]))
            loss.backward()
            opt.step()
            opt.clear_grad()
            done += 1
            bar.update(done, force=done == steps, loss=float(loss))
    bar.close()
    net.eval()
    return net


@dataclass
class TrainedClassifier:
    """A loaded classifier with its provenance and the reference feature statistics per split."""
    net: Classifier
    dataset: str
    image_shape: tuple[int, int, int]
    test_accuracy: float
    stats: dict[str, FeatureStats]

    def check_images(self, images: np.ndarray, what: str) -> None:
        if tuple(images.shape[1:]) != self.image_shape:
            raise ClassifierError(f"{what} have shape {tuple(images.shape[1:])}, but the classifier "
                                  f"was trained on {self.dataset} images {self.image_shape}")

    def fid(self, images: np.ndarray, reference: str) -> float:
        """Classifier-feature FID of `images` against the `reference` split's statistics."""
        self.check_images(images, "images")
        return frechet_distance(feature_stats(predict(self.net, images)[0]), self.stats[reference])


def fit_classifier(dataset: str, splits: dict[str, tuple[np.ndarray, np.ndarray]], epochs: int,
                   seed: int = 0, progress: bool = True) -> TrainedClassifier:
    """Train on splits['train'], measure accuracy on splits['test'], and fit both splits' stats."""
    net = train_classifier(*splits["train"], epochs=epochs, seed=seed, progress=progress)
    stats = {}
    accuracy = float("nan")
    for split, (x, y) in splits.items():
        feats, pred = predict(net, x)
        stats[split] = feature_stats(feats)
        if split == "test":
            accuracy = float((pred == y).mean())
    return TrainedClassifier(net, dataset, tuple(splits["train"][0].shape[1:]), accuracy, stats)


def save_classifier(path: str | Path, clf: TrainedClassifier) -> Path:
    """Write `clf` as a classifier folder at `path`, replacing one there (whole or not at all)."""
    stats = {f"{split}.{k}": paddle.to_tensor(getattr(st, k))
             for split, st in clf.stats.items() for k in ("mu", "sigma")}
    meta = {"kind": "classifier", "dataset": clf.dataset, "image_shape": list(clf.image_shape),
            "test_accuracy": float(clf.test_accuracy),
            "stats_n": {split: int(st.n) for split, st in clf.stats.items()}}
    return replace_folder(path, dict.fromkeys((NET, STATS)),
                          {NET: clf.net.state_dict(), STATS: stats}, meta)


def _not_one(path: Path, why: str) -> str:
    return (f"{path} is not a classifier checkpoint of `tools/evaluate.py --train-classifier` "
            f"({why}); train one with `python tools/evaluate.py --train-classifier ... "
            f"--classifier {path}`")


def _from_record(path: Path, record: Any) -> TrainedClassifier:
    """A classifier from its record {"dataset", "image_shape", "test_accuracy", "state": {name:
    array}, "stats": {split: {"mu", "sigma", "n"}}}, its weights checked against the network."""
    keys = ("dataset", "image_shape", "test_accuracy", "state", "stats")
    missing = [k for k in keys if not isinstance(record, dict) or k not in record]
    if missing:
        raise ClassifierError(_not_one(path, f"no {', '.join(missing)}"))
    try:
        shape = tuple(int(v) for v in record["image_shape"])
        state = {k: np.asarray(v) for k, v in record["state"].items()}
        net = Classifier(shape[0], state["head.bias"].shape[0])
        want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if got != want:
            bad = sorted(set(want) ^ set(got)) or sorted(k for k in want if want[k] != got[k])
            raise ClassifierError(_not_one(path, f"weights do not fit the network: {bad[:3]}"))
        net.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
        stats = {s: FeatureStats(np.asarray(st["mu"]), np.asarray(st["sigma"]), int(st["n"]))
                 for s, st in record["stats"].items()}
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        raise ClassifierError(_not_one(path, f"malformed: {err!r}")) from err
    net.eval()
    return TrainedClassifier(net, record["dataset"], shape, record["test_accuracy"], stats)


def _folder_record(path: Path) -> dict:
    """The record (see `_from_record`) of the classifier folder at `path`."""
    try:
        found = read_folder(path, (NET, STATS))
    except LegacyFormatError:
        raise
    except CheckpointError as err:
        raise ClassifierError(_not_one(path, str(err))) from err
    meta, modules = found["meta"], found["modules"]
    try:
        stats = {s: {"mu": modules[STATS][f"{s}.mu"].numpy(),
                     "sigma": modules[STATS][f"{s}.sigma"].numpy(), "n": n}
                 for s, n in meta.get("stats_n", {}).items()}
    except (KeyError, AttributeError, TypeError) as err:
        raise ClassifierError(_not_one(path, f"malformed statistics: {err!r}")) from err
    return {**{k: meta[k] for k in ("dataset", "image_shape", "test_accuracy") if k in meta},
            "state": {k: v.numpy() for k, v in modules[NET].items()}, "stats": stats}


def classifier_exists(path: str | Path) -> bool:
    """Whether there is a classifier at `path` to load (or an old-format one to refuse)."""
    return Path(path).exists() or legacy_file(path) is not None


def load_classifier(path: str | Path) -> TrainedClassifier:
    """The classifier folder at `path` (see `save_classifier`). Missing, corrupt or not a
    classifier: a one-line ClassifierError; an old single-file one: LegacyFormatError."""
    path = Path(path)
    if not classifier_exists(path):
        raise ClassifierError(
            f"no classifier at {path}. Train one (a few minutes on CPU) with "
            f"`python tools/evaluate.py --train-classifier --ckpt RUN_DIR` (cached in the run folder) "
            f"or `--train-classifier --dataset NAME --data-root DIR --classifier {path}`")
    return _from_record(path, _folder_record(path))


def convert_classifier(path: str | Path, payload: dict) -> Path:
    """Write an old single-file classifier `NAME.ckpt` (its unpickled `payload`, read by
    ebm_vae.training.legacy.read_pickle) as the classifier folder `NAME` beside it."""
    path = Path(path)
    target = path.with_suffix("")
    if target == path:
        raise ClassifierError(f"{path} has no suffix: rename it NAME.ckpt to convert it to NAME")
    if target.exists():
        raise ClassifierError(f"{target} exists already: nothing to convert")
    return save_classifier(target, _from_record(path, payload))
