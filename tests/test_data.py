"""Tests for ebm_vae.data.datasets on small generated files (no network, no real data)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from ebm_vae.data import datasets as data
from ebm_vae.data.datasets import DatasetError, load_split, read_idx

RNG = np.random.default_rng(0)
CLASSES = ("airplane", "bird", "cat")


# ---------------------------------------------------------------- generators


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, np.uint8)
    return struct.pack(">4B", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def mnist_arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    images = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1], images[1, 2, 5] = 0, 255, 200
    return images, RNG.integers(0, 10, n, dtype=np.uint8)


def write_mnist(root, gz: bool = True, n: int = 3) -> dict:
    """Write train and test IDX files; return {split: (images, labels)}."""
    os.makedirs(root, exist_ok=True)
    out = {}
    for split, (img_name, lab_name) in data._IDX_FILES.items():
        out[split] = mnist_arrays(n)
        for name, arr in zip((img_name, lab_name), out[split]):
            payload = gzip.compress(idx_bytes(arr)) if gz else idx_bytes(arr)
            with open(os.path.join(root, name + (".gz" if gz else "")), "wb") as f:
                f.write(payload)
    return out


def cifar_arrays(n: int) -> tuple[np.ndarray, list[int]]:
    rows = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
    rows[0, 0], rows[0, 1] = 0, 255
    return rows, [int(v) for v in RNG.integers(0, len(CLASSES), n)]


def cifar_batches(n: int = 4) -> dict[str, bytes]:
    """Pickled train batches data_batch_1..5 and test_batch, n images each."""
    out = {}
    for name in data._CIFAR_BATCHES["train"] + data._CIFAR_BATCHES["test"]:
        rows, labels = cifar_arrays(n)
        out[name] = pickle.dumps({b"batch_label": name.encode(), b"data": rows, b"labels": labels})
    return out


def write_files(folder, files: dict[str, bytes]) -> None:
    os.makedirs(folder, exist_ok=True)
    for name, payload in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(payload)


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in {**files, "batches.meta": b"meta"}.items():
            info = tarfile.TarInfo(f"{data._CIFAR_DIR}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def scaled(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / np.float32(127.5) - np.float32(1)


# ---------------------------------------------------------------- MNIST / Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_layout(tmp_path, name, gz, split):
    images, labels = write_mnist(tmp_path, gz=gz)[split]
    x, y = load_split(name, str(tmp_path), split)
    assert x.shape == (3, 1, 28, 28) and x.dtype == np.float32 and x.flags.c_contiguous
    assert y.dtype == np.int64 and y.tolist() == labels.tolist()
    assert x[0, 0, 0, 0] == -1.0 and x[0, 0, 0, 1] == 1.0
    assert x[1, 0, 2, 5] == np.float32(200 / 127.5 - 1)
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(x, scaled(images[:, None]))


def test_read_idx_direct(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a", ndim=3), arr)


def test_idx_missing_files(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_split("mnist", str(tmp_path))
    msg = str(err.value)
    for expected in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "data.root", "--data-root"):
        assert expected in msg
    assert f"in {tmp_path}. Expected " in msg  # two sentences


def test_idx_truncated_gz(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz") as err:
        load_split("mnist", str(tmp_path))
    assert "data.root" in str(err.value)


def test_idx_truncated_payload(tmp_path):
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.*truncated"):
        load_split("mnist", str(tmp_path), "test")


def test_idx_wrong_magic(tmp_path):
    write_mnist(tmp_path, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    (tmp_path / "train-images-idx3-ubyte").write_bytes(labels.read_bytes())  # a 0x801 file
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.*magic 0x00000801, expected 0x00000803"):
        load_split("mnist", str(tmp_path))
    (tmp_path / "x").write_bytes(b"\x1f\x00\x08\x01" + bytes(8))
    with pytest.raises(DatasetError, match="magic"):
        read_idx(tmp_path / "x")


def test_idx_count_mismatch(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(DatasetError, match="3 images but .* 2 labels"):
        load_split("mnist", str(tmp_path))


# ---------------------------------------------------------------- CIFAR-10


def expected_cifar(batches: dict[str, bytes], split: str) -> tuple[np.ndarray, np.ndarray]:
    parts = [pickle.loads(batches[name]) for name in data._CIFAR_BATCHES[split]]
    rows = np.concatenate([p[b"data"] for p in parts])
    return rows, np.concatenate([p[b"labels"] for p in parts])


@pytest.mark.parametrize("subdir", ["", data._CIFAR_DIR])
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_pickle(tmp_path, subdir, split):
    batches = cifar_batches()
    write_files(tmp_path / subdir, batches)
    rows, labels = expected_cifar(batches, split)
    x, y = load_split("cifar10", str(tmp_path), split)
    assert x.shape == (len(rows), 3, 32, 32) and x.dtype == np.float32 and x.flags.c_contiguous
    assert y.dtype == np.int64 and y.tolist() == labels.tolist()
    assert x[0, 0, 0, 0] == -1.0 and x[0, 0, 0, 1] == 1.0
    for c, r, col in [(0, 2, 5), (1, 7, 3), (2, 31, 31)]:  # CHW order of the pickle rows
        assert x[1, c, r, col] == scaled(rows[1, c * 1024 + r * 32 + col])
    np.testing.assert_array_equal(x, scaled(rows.reshape(-1, 3, 32, 32)))


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_tar_equals_pickle(tmp_path, split):
    batches = cifar_batches()
    write_files(tmp_path / "pickle", batches)
    write_files(tmp_path / "tar", {data._CIFAR_TAR: tar_bytes(batches)})
    x_pickle, y_pickle = load_split("cifar10", str(tmp_path / "pickle"), split)
    x_tar, y_tar = load_split("cifar10", str(tmp_path / "tar"), split)
    np.testing.assert_array_equal(x_tar, x_pickle)
    np.testing.assert_array_equal(y_tar, y_pickle)


def write_image_folder(root, split: str, rows: np.ndarray, labels, ext: str = ".png") -> list[int]:
    """Save rows as images in root/split/<class>/; return the expected load order."""
    for i, (row, label) in enumerate(zip(rows, labels)):
        folder = root / split / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(row.reshape(3, 32, 32).transpose(1, 2, 0)).save(folder / f"{i:04d}{ext}")
    return sorted(range(len(rows)), key=lambda i: (labels[i], i))


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_png_folder_equals_pickle(tmp_path, split):
    batches = cifar_batches()
    write_files(tmp_path / "pickle", batches)
    rows, labels = expected_cifar(batches, split)
    order = write_image_folder(tmp_path / "folder", split, rows, labels)
    x_pickle, y_pickle = load_split("cifar10", str(tmp_path / "pickle"), split)
    x, y = load_split("cifar10", str(tmp_path / "folder"), split)
    assert x.flags.c_contiguous
    np.testing.assert_array_equal(x, x_pickle[order])
    np.testing.assert_array_equal(y, y_pickle[order])


def test_cifar_jpg_and_gray_images(tmp_path):
    smooth = np.broadcast_to(np.linspace(0, 255, 32, dtype=np.uint8), (32, 32))
    rgb = np.stack([smooth, smooth.T, np.full((32, 32), 128, np.uint8)], axis=-1)
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "dog").mkdir(parents=True)
    Image.fromarray(rgb).save(tmp_path / "train" / "cat" / "a.jpg", quality=95)
    Image.fromarray(rgb).save(tmp_path / "train" / "cat" / "b.JPEG", quality=95)
    Image.fromarray(smooth).save(tmp_path / "train" / "dog" / "c.png")  # grayscale -> RGB
    (tmp_path / "train" / "dog" / "notes.txt").write_text("ignored")
    x, y = load_split("cifar10", str(tmp_path))
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [0, 0, 1]
    assert np.abs(x[0] - scaled(rgb.transpose(2, 0, 1))).max() < 0.1  # lossy JPEG
    for c in range(3):
        np.testing.assert_array_equal(x[2, c], scaled(smooth))


def test_16_bit_greyscale_images_are_scaled_not_clipped(tmp_path):
    """Pillow's own conversion clips 16-bit values at 255: every pixel but black came out white."""
    wide = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64).astype(np.uint16)
    (tmp_path / "train" / "cat").mkdir(parents=True)
    Image.fromarray(wide).save(tmp_path / "train" / "cat" / "a.png")
    assert Image.open(tmp_path / "train" / "cat" / "a.png").mode.startswith("I")  # 16-bit file
    x, _ = load_split("cifar10", str(tmp_path))
    expected = np.round(wide / 65535 * 255).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(x[0, c], scaled(expected))


def test_cifar_folder_wrong_size(tmp_path):
    (tmp_path / "test" / "cat").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "test" / "cat" / "ok.png")
    Image.new("RGB", (28, 32)).save(tmp_path / "test" / "cat" / "small.png")
    with pytest.raises(DatasetError, match=r"small\.png is 28x32, expected 32x32"):
        load_split("cifar10", str(tmp_path), "test")


def test_cifar_folder_unreadable_image(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"broken\.jpg"):
        load_split("cifar10", str(tmp_path))


def test_cifar_missing(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_split("cifar10", str(tmp_path))
    msg = str(err.value)
    for expected in ("data_batch_1", "test_batch", data._CIFAR_DIR, data._CIFAR_TAR, "train/<class>",
                     "data.root", "--data-root"):
        assert expected in msg
    assert "found). Expected " in msg


def test_cifar_truncated_tar(tmp_path):
    payload = tar_bytes(cifar_batches())
    write_files(tmp_path, {data._CIFAR_TAR: payload[: len(payload) // 2]})
    with pytest.raises(DatasetError, match=data._CIFAR_TAR):
        load_split("cifar10", str(tmp_path))


def test_cifar_tar_missing_member(tmp_path):
    batches = cifar_batches()
    del batches["data_batch_3"]
    write_files(tmp_path, {data._CIFAR_TAR: tar_bytes(batches)})
    with pytest.raises(DatasetError, match="lacks the member.*data_batch_3"):
        load_split("cifar10", str(tmp_path))


def test_cifar_bad_batch(tmp_path):
    batches = cifar_batches()
    batches["test_batch"] = pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    write_files(tmp_path, batches)
    with pytest.raises(DatasetError, match=r"test_batch: expected uint8 data \[N, 3072\]"):
        load_split("cifar10", str(tmp_path), "test")
    write_files(tmp_path, {"test_batch": b"garbage"})
    with pytest.raises(DatasetError, match="test_batch is not a readable CIFAR-10 batch"):
        load_split("cifar10", str(tmp_path), "test")


# ---------------------------------------------------------------- arguments


def test_bad_name_and_split(tmp_path):
    with pytest.raises(ValueError, match="mnist, fashion_mnist, cifar10"):
        load_split("svhn", str(tmp_path))
    with pytest.raises(ValueError, match="train, test"):
        load_split("mnist", str(tmp_path), "valid")


def test_root_not_a_folder(tmp_path):
    with pytest.raises(DatasetError, match="not a folder. .*data.root"):
        load_split("mnist", str(tmp_path / "nope"))


# ---------------------------------------------------------------- root=None: Paddle download


def test_download_failure_is_explained(monkeypatch):
    def fail(name, split):
        raise RuntimeError("Cannot download https://example/x.gz within retry limit 3")

    monkeypatch.setattr(data, "_paddle_download", fail)
    with pytest.raises(DatasetError) as err:
        load_split("fashion_mnist", None)
    msg = str(err.value)
    assert "download with Paddle failed" in msg and "retry limit 3" in msg
    assert "train-images-idx3-ubyte" in msg and "data.root" in msg and "--data-root" in msg


def test_download_delivers_files(monkeypatch, tmp_path):
    arrays = write_mnist(tmp_path / "cache")
    monkeypatch.setattr(data, "_paddle_download", lambda name, split: str(tmp_path / "cache"))
    x, y = load_split("mnist", None, "test")
    np.testing.assert_array_equal(x, scaled(arrays["test"][0][:, None]))
    np.testing.assert_array_equal(y, arrays["test"][1])


@pytest.fixture
def fake_paddle_download(monkeypatch, tmp_path):
    """Replace paddle.dataset.common.download by one serving generated files from tmp_path."""
    common = pytest.importorskip("paddle.dataset.common")
    served = {}
    calls = []

    def download(url, module_name, md5sum, save_name=None):
        calls.append((url, module_name, md5sum))
        name = url.rsplit("/", 1)[-1]
        if name not in served:
            raise RuntimeError(f"Cannot download {url} within retry limit 3")
        path = tmp_path / "cache" / module_name / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(served[name])
        return str(path)

    monkeypatch.setattr(common, "download", download)
    return served, calls


def test_paddle_download_mnist(fake_paddle_download):
    from paddle.vision.datasets import FashionMNIST

    served, calls = fake_paddle_download
    images, labels = mnist_arrays(5)
    served["t10k-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(images))
    served["t10k-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels))
    x, y = load_split("fashion_mnist", None, "test")
    assert calls[0] == (FashionMNIST.TEST_IMAGE_URL, FashionMNIST.NAME, FashionMNIST.TEST_IMAGE_MD5)
    np.testing.assert_array_equal(x, scaled(images[:, None]))
    np.testing.assert_array_equal(y, labels)
    with pytest.raises(DatasetError, match="download with Paddle failed.*train-images-idx3-ubyte.gz"):
        load_split("fashion_mnist", None, "train")


def test_paddle_download_cifar(fake_paddle_download):
    from paddle.vision.datasets import cifar

    served, calls = fake_paddle_download
    batches = cifar_batches()
    served[data._CIFAR_TAR] = tar_bytes(batches)
    x, y = load_split("cifar10", None, "train")
    assert calls == [(cifar.CIFAR10_URL, "cifar", cifar.CIFAR10_MD5)]
    rows, labels = expected_cifar(batches, "train")
    np.testing.assert_array_equal(x, scaled(rows.reshape(-1, 3, 32, 32)))
    np.testing.assert_array_equal(y, labels)


def test_module_imports_without_paddle():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('data', {data.__file__!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "assert 'paddle' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_subset_of_a_class_sorted_split_spans_the_classes():
    """Image folders load class by class: a subset of 100 must not be the first class only."""
    labels = np.repeat(np.arange(10), 100)
    images = labels.astype(np.float32).reshape(-1, 1, 1, 1)
    picked = data.subset(images, 100)
    assert len(picked) == 100 and len(np.unique(picked)) == 10
    assert np.all(np.diff(picked.ravel()) >= 0)  # file order kept
    np.testing.assert_array_equal(picked, data.subset(images, 100))  # a fixed choice
    assert data.subset(images, None) is images and data.subset(images, 5000) is images
