"""PNG output with Pillow only: image grids and simple line plots of training curves."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[N, C, H, W] floats in [-1, 1] (clipped) -> [N, H, W, C] uint8."""
    x = (np.clip(images, -1.0, 1.0) + 1.0) * 127.5
    return np.round(x).astype(np.uint8).transpose(0, 2, 3, 1)


def grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile [N, C, H, W] images in [-1, 1] into one uint8 [H', W', C] array, `nrow` per row."""
    pics = to_uint8(images)
    n, h, w, c = pics.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i, pic in enumerate(pics):
        r, k = divmod(i, nrow)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = pic
    return out


def save_grids(path: str | Path, panels: Sequence[tuple[str, np.ndarray]], nrow: int | None = None,
               scale: int = 2) -> None:
    """Save titled image grids side by side (e.g. VAE proposals | Langevin-revised samples)."""
    tiles = [grid(images, nrow) for _, images in panels]
    tiles = [np.repeat(np.repeat(t, scale, 0), scale, 1) for t in tiles]
    if tiles[0].shape[2] == 1:
        tiles = [np.repeat(t, 3, axis=2) for t in tiles]
    gap, head = 10, 18
    width = sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1)
    canvas = Image.new("RGB", (width, max(t.shape[0] for t in tiles) + head), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for (title, _), tile in zip(panels, tiles):
        canvas.paste(Image.fromarray(tile), (x, head))
        draw.text((x + 2, 3), title, fill="black", font=ImageFont.load_default())
        x += tile.shape[1] + gap
    _save(canvas, path)


def _save(img: Image.Image, path: str | Path) -> None:
    from ebm_vae.utils.atomic import atomic_write
    with atomic_write(path, "wb") as fh:
        img.save(fh, format="PNG")


_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str,
           series: dict[str, tuple[Sequence[float], Sequence[float]]]) -> None:
    """One line-plot panel inside `box` = (left, top, right, bottom)."""
    font = ImageFont.load_default()
    left, top, right, bottom = box
    draw.text((left + 50, top + 2), title, fill="black", font=font)
    px0, py0, px1, py1 = left + 50, top + 18, right - 10, bottom - 22
    draw.rectangle([px0, py0, px1, py1], outline="black")
    xs = [x for xv, _ in series.values() for x in xv]
    ys = [y for _, yv in series.values() for y in yv if math.isfinite(y)]
    if not xs or not ys:
        return
    xmin, xmax = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    ymin, ymax = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    draw.text((left + 2, py0), _fmt(ymax), fill="black", font=font)
    draw.text((left + 2, py1 - 10), _fmt(ymin), fill="black", font=font)
    draw.text((px0, py1 + 4), _fmt(xmin), fill="black", font=font)
    draw.text((px1 - 40, py1 + 4), _fmt(xmax), fill="black", font=font)

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (px0 + (x - xmin) / (xmax - xmin) * (px1 - px0),
                py1 - (y - ymin) / (ymax - ymin) * (py1 - py0))

    for k, (name, (xv, yv)) in enumerate(series.items()):
        color = _COLORS[k % len(_COLORS)]
        pts = [to_px(x, y) for x, y in zip(xv, yv) if math.isfinite(y)]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=1)
        elif pts:
            draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=color)
        draw.text((px0 + 6 + 110 * k, py0 + 4), name, fill=color, font=font)


def save_plots(path: str | Path, panels: Sequence[tuple[str, dict]], xlabel: str = "iteration",
               width: int = 480, height: int = 240) -> None:
    """Save stacked line plots; each panel is (title, {series name: (xs, ys)})."""
    img = Image.new("RGB", (width, height * len(panels) + 14), "white")
    draw = ImageDraw.Draw(img)
    for i, (title, series) in enumerate(panels):
        _panel(draw, (0, i * height, width, (i + 1) * height), title, series)
    draw.text((width // 2 - 20, height * len(panels)), xlabel, fill="black",
              font=ImageFont.load_default())
    _save(img, path)
