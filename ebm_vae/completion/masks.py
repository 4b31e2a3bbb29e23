"""Hole masks for image completion: 1 marks a missing pixel, 0 a visible one.

Masks are float32 [N, 1, H, W] arrays (one hole pattern per image, shared by its channels).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ebm_vae.errors import UserError
from ebm_vae.utils.images import to_8bit


class FillError(UserError, ValueError):
    """The image, mask or checkpoint cannot be completed by / loaded into this model."""


class MaskError(UserError, ValueError):
    """A mask is malformed or does not fit the image."""


def _check_hole(image_size: int, hole: int) -> None:
    if not 1 <= hole < image_size:
        raise MaskError(f"hole size {hole} must be in [1, {image_size - 1}] for {image_size}x"
                        f"{image_size} images")


def center_masks(n: int, image_size: int, hole: int) -> np.ndarray:
    """The Context-Encoder setting: a `hole` x `hole` square in the centre of every image."""
    _check_hole(image_size, hole)
    masks = np.zeros((n, 1, image_size, image_size), np.float32)
    top = (image_size - hole) // 2
    masks[:, :, top:top + hole, top:top + hole] = 1.0
    return masks


def random_square_masks(n: int, image_size: int, hole: int, rng: np.random.Generator) -> np.ndarray:
    """A `hole` x `hole` square at a uniformly random position (fully inside) in each image."""
    _check_hole(image_size, hole)
    masks = np.zeros((n, 1, image_size, image_size), np.float32)
    tops = rng.integers(0, image_size - hole + 1, size=(n, 2))
    for mask, (top, left) in zip(masks, tops):
        mask[:, top:top + hole, left:left + hole] = 1.0
    return masks


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask image as a [1, 1, H, W] array: pixels >= 128 in grey scale (white) are the hole.

    With `size` = (height, width), the mask must have that size (no silent resampling).
    """
    path = Path(path)
    if not path.is_file():
        raise MaskError(f"mask file not found: {path}")
    try:
        grey = np.asarray(to_8bit(Image.open(path), "L"))
    except OSError as err:  # PIL.UnidentifiedImageError included: not an image
        raise MaskError(f"mask file {path} is not an image Pillow can read: {err}") from err
    if size is not None and grey.shape != tuple(size):
        raise MaskError(f"mask {path} is {grey.shape[1]}x{grey.shape[0]} (WxH), but the image is "
                        f"{size[1]}x{size[0]}")
    mask = (grey >= 128).astype(np.float32)[None, None]
    if not mask.any():
        raise MaskError(f"mask {path} has no hole (no pixel >= 128; white marks the hole)")
    return mask


def resize_mask(mask: np.ndarray, image_size: int) -> np.ndarray:
    """Resize a [N, 1, H, W] mask to image_size x image_size (box filter): a pixel is hole if any
    hole pixel falls in it, so thin holes survive downsizing."""
    out = [np.asarray(Image.fromarray((m[0] * 255).astype(np.uint8)).resize(
        (image_size, image_size), Image.BOX)) > 0 for m in mask]
    return np.stack(out)[:, None].astype(np.float32)


def apply_mask(images: np.ndarray, masks: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Images with the hole set to `fill` (0 = mid-grey in [-1, 1])."""
    return images * (1.0 - masks) + fill * masks


def paste(filled: np.ndarray, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Completion = `filled` inside the hole, the input's own pixels everywhere else."""
    return masks * filled + (1.0 - masks) * images


class MaskSource:
    """Masks of one configured kind: 'center', 'random_square' (drawn from `rng`) or 'file'
    (one mask image, read once and resized to the image size, used for every image)."""

    def __init__(self, kind: str, hole: int, image_size: int, path: str | None = None):
        self.kind, self.hole, self.image_size = kind, hole, image_size
        if kind == "file":
            self.fixed = resize_mask(load_mask(path), image_size)
            if not self.fixed.any() or self.fixed.all():
                raise MaskError(f"mask {path} at {image_size}x{image_size} has no hole or no "
                                "visible pixel")
        elif kind not in ("center", "random_square"):
            raise MaskError(f"unknown mask kind '{kind}' (center, random_square, file)")

    def __call__(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "center":
            return center_masks(n, self.image_size, self.hole)
        if self.kind == "random_square":
            return random_square_masks(n, self.image_size, self.hole, rng)
        return np.repeat(self.fixed, n, axis=0)
