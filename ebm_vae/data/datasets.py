"""Dataset loading: MNIST, Fashion-MNIST and CIFAR-10 as float arrays in [-1, 1].

Local files are parsed by the small readers below; with no data root the files are fetched by
Paddle's own dataset downloader (``paddle.dataset.common.download``, cache
``~/.cache/paddle/dataset/<name>/``) and then parsed by the same readers.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import tarfile
import zlib
from typing import IO, Optional

import numpy as np
from PIL import Image

from ebm_vae.errors import UserError
from ebm_vae.utils.images import to_8bit

DATASETS = ("mnist", "fashion_mnist", "cifar10")
SPLITS = ("train", "test")

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TAR = "cifar-10-python.tar.gz"
_IMAGE_EXTS = (".png", ".jpg", ".jpeg")

_SOURCES = {
    "mnist": "http://yann.lecun.com/exdb/mnist/ (or any mirror of the four IDX files)",
    "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist (folder data/fashion/), "
    "or `apt-get install dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist/)",
    "cifar10": f"https://www.cs.toronto.edu/~kriz/{_CIFAR_TAR}",
}


class DatasetError(UserError, RuntimeError):
    """A dataset is missing, corrupt, or could not be downloaded."""


def _help(name: str, offer_download: bool = True) -> str:
    """What files `name` needs, where they go, and where to get them."""
    if name == "cifar10":
        files = (
            f"one of three layouts: (1) pickle batches {', '.join(_CIFAR_BATCHES['train'])}, test_batch "
            f"in the folder or in <folder>/{_CIFAR_DIR}/; (2) the archive {_CIFAR_TAR}; "
            "(3) image folders train/<class>/*.png|*.jpg|*.jpeg and test/<class>/... of 32x32 images"
        )
    else:
        files = ", ".join(f"{f}[.gz]" for split in SPLITS for f in _IDX_FILES[split])
    text = (
        f"Expected {files}. Put them in one folder and point the config key `data.root` "
        f"(CLI `--data-root`) at it. Get them from {_SOURCES[name]}"
    )
    if offer_download:
        text += ", or leave `data.root` unset to let Paddle download them (needs internet)"
    return text + "."


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (raw or gzipped) as a read-only uint8 array.

    Checks the magic number (0x0000080<ndim>, e.g. 0x803 images, 0x801 labels) and that the
    payload length matches the header dimensions; raises DatasetError naming the file otherwise.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"cannot read {path}: {e}") from e
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or (ndim is not None and data[3] != ndim):
        expected = f"0x0000080{ndim}" if ndim is not None else "0x000008<ndim>"
        raise DatasetError(
            f"{path} is not an IDX file of unsigned bytes: magic 0x{data[:4].hex()}, expected {expected}"
        )
    header = 4 + 4 * data[3]
    if len(data) < header:
        raise DatasetError(f"{path} is truncated: the header is incomplete")
    dims = struct.unpack(f">{data[3]}I", data[4:header])
    if len(data) - header != math.prod(dims):
        raise DatasetError(
            f"{path} is truncated or corrupt: dimensions {dims} need {math.prod(dims)} bytes, "
            f"the file holds {len(data) - header}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _find_idx(root: str, stem: str) -> str | None:
    """Path of `stem` or `stem.gz` in root, or None."""
    for path in (os.path.join(root, stem), os.path.join(root, stem + ".gz")):
        if os.path.isfile(path):
            return path
    return None


def _load_mnist_like(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images [N,1,28,28] and labels [N] (uint8) from the IDX files of `split`."""
    stems = _IDX_FILES[split]
    paths = [_find_idx(root, stem) for stem in stems]
    missing = [f"{stem}[.gz]" for stem, path in zip(stems, paths) if path is None]
    if missing:
        raise DatasetError(f"missing {', '.join(missing)} in {root}")
    images, labels = read_idx(paths[0], ndim=3), read_idx(paths[1], ndim=1)
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{paths[0]}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if len(images) != len(labels):
        raise DatasetError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels")
    return images[:, None], labels


def _read_cifar_batch(f: IO[bytes], where: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch (pickle dict with b"data" uint8 [n, 3072] CHW rows, b"labels")."""
    try:
        batch = pickle.load(f, encoding="bytes")
        x, y = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as e:  # unpickling corrupt input can raise nearly anything
        raise DatasetError(f"{where} is not a readable CIFAR-10 batch: {type(e).__name__}: {e}") from e
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or y.shape != (len(x),):
        raise DatasetError(
            f"{where}: expected uint8 data [N, 3072] and N labels, got {x.dtype} data {x.shape} "
            f"and labels {y.shape}"
        )
    return x.reshape(-1, 3, 32, 32), y


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def _load_cifar_batches(folder: str, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Layout 1: pickle batch files in `folder`."""
    parts = []
    for name in names:
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            parts.append(_read_cifar_batch(f, path))
    return _concat(parts)


def _load_cifar_tar(path: str, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Layout 2: the batches read straight out of cifar-10-python.tar.gz, in one pass."""
    found = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = os.path.basename(member.name)
                if member.isfile() and base in names:
                    found[base] = _read_cifar_batch(tar.extractfile(member), f"{path}:{member.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"cannot read {path}: {e}") from e
    missing = [name for name in names if name not in found]
    if missing:
        raise DatasetError(f"{path} lacks the member(s) {', '.join(missing)}")
    return _concat([found[name] for name in names])


def _load_image_folder(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """Layout 3: `folder/<class>/*.png|jpg|jpeg`, 32x32; labels index the sorted class names."""
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    files = [
        (os.path.join(folder, cls, name), label)
        for label, cls in enumerate(classes)
        for name in sorted(os.listdir(os.path.join(folder, cls)))
        if name.lower().endswith(_IMAGE_EXTS)
    ]
    if not files:
        raise DatasetError(f"no {'/'.join(_IMAGE_EXTS)} images in {folder}/<class>/")
    x = np.empty((len(files), 32, 32, 3), np.uint8)
    for i, (path, _) in enumerate(files):
        try:
            with Image.open(path, formats=("JPEG", "PNG")) as im:
                if im.size != (32, 32):
                    raise DatasetError(f"{path} is {im.size[0]}x{im.size[1]}, expected 32x32")
                x[i] = np.asarray(to_8bit(im, "RGB"))
        except OSError as e:
            raise DatasetError(f"cannot read image {path}: {e}") from e
    return x.transpose(0, 3, 1, 2), np.array([label for _, label in files], np.int64)


def _load_cifar10(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 from the first layout found: pickle batches, tar.gz archive, image folder."""
    names = _CIFAR_BATCHES[split]
    for folder in (root, os.path.join(root, _CIFAR_DIR)):
        if all(os.path.isfile(os.path.join(folder, name)) for name in names):
            return _load_cifar_batches(folder, names)
    if os.path.isfile(os.path.join(root, _CIFAR_TAR)):
        return _load_cifar_tar(os.path.join(root, _CIFAR_TAR), names)
    if os.path.isdir(os.path.join(root, split)):
        return _load_image_folder(os.path.join(root, split))
    raise DatasetError(f"no CIFAR-10 {split} data in {root} (none of the three layouts found)")


_LOADERS = {"mnist": _load_mnist_like, "fashion_mnist": _load_mnist_like, "cifar10": _load_cifar10}


def _paddle_download(name: str, split: str) -> str:
    """Fetch the files with Paddle's dataset downloader (same URLs/MD5s as paddle.vision.datasets)
    into ~/.cache/paddle/dataset/<module>/ and return that folder."""
    from paddle.dataset.common import download

    if name == "cifar10":
        from paddle.vision.datasets import cifar

        return os.path.dirname(download(cifar.CIFAR10_URL, "cifar", cifar.CIFAR10_MD5))
    from paddle.vision.datasets import MNIST, FashionMNIST

    cls = MNIST if name == "mnist" else FashionMNIST
    prefix = split.upper()
    paths = [
        download(getattr(cls, f"{prefix}_{kind}_URL"), cls.NAME, getattr(cls, f"{prefix}_{kind}_MD5"))
        for kind in ("IMAGE", "LABEL")
    ]
    return os.path.dirname(paths[0])


def load_split(name: str, root: str | None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 [N, C, H, W] scaled to [-1, 1] (x / 127.5 - 1), labels as int64 [N].

    root=None: download with Paddle's own dataset machinery, then parse the cached files.
    root given: local files only, never a download. Raises DatasetError with a how-to-fix message.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    local = root is not None
    if not local:
        try:
            root = _paddle_download(name, split)
        except Exception as e:  # any failure of paddle's machinery, incl. API changes across versions
            raise DatasetError(
                f"{name}: the download with Paddle failed ({type(e).__name__}: {e}). "
                f"{_help(name, offer_download=False)}"
            ) from e
    elif not os.path.isdir(root):
        raise DatasetError(f"{name}: data root {root} is not a folder. {_help(name)}")
    try:
        x, y = _LOADERS[name](root, split)
    except DatasetError as e:
        what = str(e).rstrip(".")
        raise DatasetError(f"{name}: {what}. {_help(name, offer_download=local)}") from e
    images = x.astype(np.float32, order="C")
    images /= 127.5
    images -= 1.0
    return images, y.astype(np.int64)


def subset(images: np.ndarray, n: Optional[int], seed: int = 0) -> np.ndarray:
    """`n` images of a split (all if n is None or >= its size): a fixed seeded choice kept in file
    order, so a split stored class by class (image folders) is not cut to its first classes."""
    if n is None or n >= len(images):
        return images
    return images[np.sort(np.random.default_rng(seed).permutation(len(images))[:n])]
