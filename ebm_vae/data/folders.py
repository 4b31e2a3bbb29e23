"""Image-folder datasets for completion: Paris Street View and CMP Facade, as uint8 arrays.

Images come back as uint8 [N, 3, S, S] (4x smaller than floats; `to_float` maps a batch to
[-1, 1]), resized to S x S by one of two rules:
- "stretch": the whole picture squashed to a square (the pix2pix facades set did this);
- "center_crop": the central square of side min(width, height), then resized (keeps aspect).

Layouts (split "train" or "test"):
- paris_street_view: `train/` and `test/`, or `paris_train/` and `paris_eval/` as distributed
  (images anywhere below them).
- cmp_facade, pix2pix split: `train/`, `test/` of 2:1 pictures, photo in the left half.
- cmp_facade, base set: `cmp_bNNNN.jpg` in the folder; our split: every tenth (NNNN divisible
  by 10) is test, the rest train.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ebm_vae.data.datasets import DatasetError
from ebm_vae.utils.images import to_8bit

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
_SOURCES = {
    "paris_street_view": "the Paris Street View dataset (Pathak et al. 2016, Context Encoders) is "
    "given out by its authors on request: see https://github.com/pathak22/context-encoder "
    "(email the authors). Unpack it so the folder holds paris_train/ and paris_eval/ "
    "(or train/ and test/)",
    "cmp_facade": "CMP Facade DB (Tylecek & Sara 2013): https://cmp.felk.cvut.cz/~tylecr1/facade/ "
    "(the base set: a folder of cmp_bNNNN.jpg), or the pix2pix 'facades' split "
    "(train/, val/, test/ of 512x256 photo|label pairs)",
}
_PARIS_DIRS = {"train": ("train", "paris_train"), "test": ("test", "paris_eval")}
_BASE_NAME = re.compile(r"cmp_b(\d+)\.jpg$", re.IGNORECASE)


def _images_below(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _to_square(img: Image.Image, size: int, resize: str) -> np.ndarray:
    img = to_8bit(img, "RGB")
    if resize == "center_crop":
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(img.resize((size, size), Image.BICUBIC)).transpose(2, 0, 1)


def _read(paths: list[Path], size: int, resize: str, left_half: bool = False) -> np.ndarray:
    out = np.empty((len(paths), 3, size, size), np.uint8)
    for i, path in enumerate(paths):
        try:
            img = ImageOps.exif_transpose(Image.open(path))  # as shown (EXIF orientation)
        except OSError as err:
            raise DatasetError(f"cannot read image {path}: {err}") from err
        if left_half:
            w, h = img.size
            if w != 2 * h:
                raise DatasetError(f"{path} is {w}x{h}; the pix2pix facades layout has 2:1 "
                                   "pictures (photo left, labels right)")
            img = img.crop((0, 0, h, h))
        out[i] = _to_square(img, size, resize)
    return out


def _paris_files(root: Path, split: str) -> list[Path]:
    for name in _PARIS_DIRS[split]:
        if (root / name).is_dir():
            return _images_below(root / name)
    raise DatasetError(f"no {' or '.join(d + '/' for d in _PARIS_DIRS[split])} folder in {root}")


def _facade_files(root: Path, split: str) -> tuple[list[Path], bool]:
    """(files, photo-in-left-half) for the base set or the pix2pix split."""
    base = [p for p in sorted(root.iterdir()) if _BASE_NAME.search(p.name)]
    if base:
        test = split == "test"
        return [p for p in base if (int(_BASE_NAME.search(p.name).group(1)) % 10 == 0) == test], False
    if (root / split).is_dir():
        return _images_below(root / split), True
    raise DatasetError(f"{root} holds neither cmp_bNNNN.jpg files (base set) nor a {split}/ "
                       "folder (pix2pix facades split)")


def load_folder_split(name: str, root: str | None, split: str, image_size: int,
                      resize: str) -> np.ndarray:
    """Images of `split` ("train" or "test") as uint8 [N, 3, image_size, image_size]."""
    if name not in _SOURCES:
        raise DatasetError(f"unknown completion dataset '{name}' (known: {', '.join(_SOURCES)})")
    if root is None:
        raise DatasetError(f"dataset '{name}' needs a local folder: set data.root (CLI "
                           f"--data-root). Get it from {_SOURCES[name]}")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"data folder {folder} does not exist. Get '{name}' from {_SOURCES[name]}")
    if name == "paris_street_view":
        files, left_half = _paris_files(folder, split), False
    else:
        files, left_half = _facade_files(folder, split)
    if not files:
        raise DatasetError(f"no {'/'.join(IMAGE_EXTS)} images for split '{split}' of '{name}' in "
                           f"{folder}. Get it from {_SOURCES[name]}")
    return _read(files, image_size, resize, left_half)


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images.astype(np.float32) / 127.5 - 1.0


def read_image(path: str | Path) -> np.ndarray:
    """One RGB picture at its own size as float32 [1, 3, H, W] in [-1, 1]."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}")
    try:
        img = to_8bit(Image.open(path), "RGB")
    except OSError as err:
        raise DatasetError(f"cannot read image {path}: {err}") from err
    return to_float(np.asarray(img).transpose(2, 0, 1)[None])
