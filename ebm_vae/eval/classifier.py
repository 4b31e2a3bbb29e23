"""A small CNN classifier trained on a dataset's own labels: the feature space of the offline FID.

"Classifier FID" = the Frechet distance (ebm_vae.eval.metrics) between the statistics of this network's
128-d penultimate features (global average pool of the last conv) of generated and real images.
It needs no download, so it works on a laptop and in tests, but it is NOT comparable to the
Inception FIDs of papers: use it to compare runs, checkpoints and samplers with each other.

The checkpoint (ebm_vae.core.states single-file format) holds the weights, the dataset name, the image shape,
the test accuracy and the feature statistics of the train and test splits (the FID references).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ebm_vae.core.states import load_checkpoint, save_checkpoint
from ebm_vae.errors import UserError
from ebm_vae.eval.metrics import FeatureStats, feature_stats, frechet_distance
from ebm_vae.utils.progress import Progress

FEATURE_DIM = 128
NUM_CLASSES = 10


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


def save_classifier(path: str | Path, clf: TrainedClassifier) -> None:
    save_checkpoint(path, {
        "dataset": clf.dataset, "image_shape": list(clf.image_shape),
        "test_accuracy": clf.test_accuracy, "state": clf.net.state_dict(),
        "stats": {s: {"mu": st.mu, "sigma": st.sigma, "n": st.n} for s, st in clf.stats.items()}})


def load_classifier(path: str | Path) -> TrainedClassifier:
    path = Path(path)
    if not path.is_file():
        raise ClassifierError(
            f"no classifier at {path}. Train one (a few minutes on CPU) with "
            f"`python tools/evaluate.py --train-classifier --ckpt RUN_DIR` (cached in the run folder) "
            f"or `--train-classifier --dataset NAME --data-root DIR --classifier {path}`")

    def not_one(why: str) -> str:
        return (f"{path} is not a classifier checkpoint of `tools/evaluate.py --train-classifier` "
                f"({why}); train one with `python tools/evaluate.py --train-classifier ... "
                f"--classifier {path}`")

    try:
        payload = load_checkpoint(path)
    except Exception as err:  # unpickling arbitrary bytes can raise nearly anything
        raise ClassifierError(not_one(f"unreadable: {err}")) from err
    keys = ("dataset", "image_shape", "test_accuracy", "state", "stats")
    missing = [k for k in keys if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise ClassifierError(not_one(f"no {', '.join(missing)}"))
    try:
        shape = tuple(int(v) for v in payload["image_shape"])
        state = {k: np.asarray(v) for k, v in payload["state"].items()}
        net = Classifier(shape[0], state["head.bias"].shape[0])
        want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if got != want:
            bad = sorted(set(want) ^ set(got)) or sorted(k for k in want if want[k] != got[k])
            raise ClassifierError(not_one(f"weights do not fit the network: {bad[:3]}"))
        net.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
        stats = {s: FeatureStats(np.asarray(st["mu"]), np.asarray(st["sigma"]), int(st["n"]))
                 for s, st in payload["stats"].items()}
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        raise ClassifierError(not_one(f"malformed: {err!r}")) from err
    net.eval()
    return TrainedClassifier(net, payload["dataset"], shape, payload["test_accuracy"], stats)
