"""Images with Pillow only: 8-bit conversion of the pictures read, and PNG output: image grids, and
line plots of training curves with labelled ticks, a legend, and a log or symlog y-axis where the
values span decades."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ebm_vae.utils.atomic import write_bytes


def to_8bit(img: Image.Image, mode: str) -> Image.Image:
    """`img` converted to the 8-bit `mode` ("RGB" or "L"), 16-bit greyscale scaled by 255 / 65535
    first (Pillow's own conversion clips it at 255: nearly every pixel would come out white).
    Every reader of image files converts through here, so pictures come in the orientation they
    are shown in (a JPEG's EXIF orientation applied, as viewers do)."""
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I"):  # I;16, I;16B, ...; I: a 16-bit PNG in older Pillow versions
        grey = np.asarray(img, dtype=np.float64) * (255 / 65535)
        img = Image.fromarray(np.clip(np.round(grey), 0, 255).astype(np.uint8), "L")
    return img.convert(mode)


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
    save_png(canvas, path)


def save_png(img: Image.Image, path: str | Path) -> None:
    """Write a PIL image as PNG, atomically."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


# ---- line plots -------------------------------------------------------------------------------

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
DECADES = 3  # a series spanning this many decades (or more) gets a log / symlog axis


@dataclass(frozen=True)
class Scale:
    """A y-axis: "linear", "log" (all values > 0) or "symlog" (linear within +-linthresh,
    logarithmic outside: sign(y) log10(1 + |y| / linthresh))."""
    kind: str
    linthresh: float = 1.0

    def forward(self, y: float) -> float:
        if self.kind == "log":
            return math.log10(y)
        if self.kind == "symlog":
            return math.copysign(math.log10(1.0 + abs(y) / self.linthresh), y)
        return y

    def inverse(self, t: float) -> float:
        if self.kind == "log":
            return 10.0 ** t
        if self.kind == "symlog":
            return math.copysign(self.linthresh * (10.0 ** abs(t) - 1.0), t)
        return t

    def label(self) -> str:
        return {"linear": "", "log": "log y", "symlog": f"symlog y, linear within ±{_fmt(self.linthresh)}"}[self.kind]


def choose_scale(values: Sequence[float], decades: float = DECADES) -> Scale:
    """The y-axis for `values` (non-finite ones ignored).

    A series is *wide* when its non-zero magnitudes span at least `decades` decades, and
    *dominated* when its largest magnitude is at least 10 x the median one (a runaway or a spike
    squashes everything else on a linear axis). All values > 0, wide or dominated: log. Values
    that touch or cross zero, dominated: symlog, linear within +-linthresh = the power of ten below
    the 10th percentile of the non-zero magnitudes. Everything else: linear."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    mags = np.abs(v[v != 0])
    if v.size < 2 or mags.size == 0:
        return Scale("linear")
    wide = mags.max() / mags.min() >= 10.0 ** decades
    dominated = mags.max() >= 10.0 * np.median(np.abs(v))
    if (v > 0).all():
        return Scale("log") if wide or dominated else Scale("linear")
    if not dominated:
        return Scale("linear")
    return Scale("symlog", 10.0 ** math.floor(math.log10(float(np.percentile(mags, 10)))))


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round values (1, 2, 5 x 10^k steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    k = 0
    while first + k * step <= hi + step * 1e-9:
        t = first + k * step
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        k += 1
    return ticks


def scale_ticks(scale: Scale, lo: float, hi: float, n: int = 6) -> list[float]:
    """Tick values (in data units) for a y-range [lo, hi] under `scale`: round values (linear),
    powers of ten (log), or 0, +-linthresh and +-powers of ten beyond it (symlog); thinned to
    about `n`."""
    if scale.kind == "linear":
        return nice_ticks(lo, hi, n)
    if scale.kind == "log":
        ticks = [10.0 ** k for k in range(math.ceil(math.log10(lo) - 1e-9),
                                          math.floor(math.log10(hi) + 1e-9) + 1)]
        if len(ticks) < 2:  # less than a decade: round values instead
            return nice_ticks(lo, hi, n)
    else:
        base = math.log10(scale.linthresh)
        top = max(abs(lo), abs(hi))
        pos = [10.0 ** k for k in range(round(base), math.floor(math.log10(top) + 1e-9) + 1)] if top > 0 else []
        ticks = [-t for t in reversed(pos) if -t >= lo] + ([0.0] if lo <= 0 <= hi else []) + [t for t in pos if t <= hi]
    keep = max(1, math.ceil(len(ticks) / n))
    if keep > 1:  # thin out, keeping 0 (symlog) and the ends' decades
        ticks = [t for i, t in enumerate(ticks) if (i - ticks.index(min(ticks, key=abs))) % keep == 0]
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        mant, exp = f"{v:.2e}".split("e")
        mant = mant.rstrip("0").rstrip(".")
        return f"{mant}e{int(exp)}"
    return f"{v:.4g}"


@dataclass(frozen=True)
class _Frame:
    """A panel's plot area (px0, py0)-(px1, py1) in pixels and what it shows: x in [xmin, xmax],
    y in [tmin, tmax] after the axis scale's `forward`."""
    px0: float
    py0: float
    px1: float
    py1: float
    xmin: float
    xmax: float
    tmin: float
    tmax: float
    scale: Scale

    def x_px(self, x: float) -> float:
        return self.px0 + (x - self.xmin) / (self.xmax - self.xmin) * (self.px1 - self.px0)

    def y_px(self, y: float) -> float:
        return (self.py1 - (self.scale.forward(y) - self.tmin) / (self.tmax - self.tmin)
                * (self.py1 - self.py0))


def _finite_points(xv: Sequence[float], yv: Sequence[float]) -> list[tuple[float, float]]:
    return [(x, y) for x, y in zip(xv, yv) if math.isfinite(y) and math.isfinite(x)]


def _frame(area: tuple[int, int, int, int], points: list[tuple[float, float]],
           scale: Scale) -> _Frame:
    """The frame of a plot `area` showing `points` (at least one): the x range (widened by 0.5
    on both sides when it is a single value) and the scaled y range with a 5% margin."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    xmin, xmax = min(xs), max(xs)
    if xmax <= xmin:
        xmin, xmax = xmin - 0.5, xmax + 0.5
    tmin, tmax = scale.forward(min(ys)), scale.forward(max(ys))
    if tmax <= tmin:
        pad = abs(tmin) * 0.05 or 0.5
        tmin, tmax = tmin - pad, tmax + pad
    else:
        pad = (tmax - tmin) * 0.05
        tmin, tmax = tmin - pad, tmax + pad
    return _Frame(*area, xmin, xmax, tmin, tmax, scale)


def _draw_ticks(draw: ImageDraw.ImageDraw, f: _Frame,
                font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> None:
    """Labelled ticks: the y-axis's (with grid lines) under its scale, round values on x."""
    for t in scale_ticks(f.scale, f.scale.inverse(f.tmin), f.scale.inverse(f.tmax)):
        y = f.y_px(t)
        if f.py0 - 0.5 <= y <= f.py1 + 0.5:
            draw.line([(f.px0, y), (f.px1, y)], fill="#e6e6e6")
            draw.line([(f.px0 - 4, y), (f.px0, y)], fill="black")
            label = _fmt(t)
            draw.text((f.px0 - 6 - draw.textlength(label, font=font), y - 5), label, fill="black", font=font)
    for t in nice_ticks(f.xmin, f.xmax, 6):
        x = f.x_px(t)
        if f.px0 - 0.5 <= x <= f.px1 + 0.5:
            draw.line([(x, f.py1), (x, f.py1 + 4)], fill="black")
            label = _fmt(t)
            draw.text((x - draw.textlength(label, font=font) / 2, f.py1 + 6), label, fill="black", font=font)


def _draw_series(draw: ImageDraw.ImageDraw, f: _Frame,
                 series: dict[str, tuple[Sequence[float], Sequence[float]]]) -> None:
    """Each series as a line in its colour, with dots where it has at most 20 points."""
    for k, (xv, yv) in enumerate(series.values()):
        color = _COLORS[k % len(_COLORS)]
        pts = [(f.x_px(x), f.y_px(y)) for x, y in _finite_points(xv, yv)]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=1)
        for px, py in pts if len(pts) <= 20 else []:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)


def _draw_legend(draw: ImageDraw.ImageDraw, f: _Frame, names: list[str],
                 font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> None:
    """A line sample and the name of each series, on a white box at the top right."""
    width = max(draw.textlength(n, font=font) for n in names) + 30
    lx0, ly0 = f.px1 - width - 6, f.py0 + 6
    draw.rectangle([lx0, ly0, f.px1 - 6, ly0 + 4 + 12 * len(names)], fill="white", outline="#999999")
    for k, name in enumerate(names):
        color = _COLORS[k % len(_COLORS)]
        y = ly0 + 8 + 12 * k
        draw.line([(lx0 + 4, y), (lx0 + 20, y)], fill=color, width=2)
        draw.text((lx0 + 24, y - 5), name, fill="black", font=font)


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str,
           series: dict[str, tuple[Sequence[float], Sequence[float]]]) -> None:
    """One line-plot panel inside `box` = (left, top, right, bottom): labelled ticks on both
    axes, a log or symlog y-axis where the values span decades, and a legend."""
    font = ImageFont.load_default()
    left, top, right, bottom = box
    area = (left + 62, top + 18, right - 12, bottom - 30)
    points = [p for xv, yv in series.values() for p in _finite_points(xv, yv)]
    scale = choose_scale([y for _, y in points])
    note = scale.label()
    draw.text((area[0], top + 3), f"{title}  [{note}]" if note else title, fill="black", font=font)
    draw.rectangle(list(area), outline="black")
    if not points:
        draw.text((area[0] + 8, area[1] + 8), "no finite values", fill="gray", font=font)
        return
    frame = _frame(area, points, scale)
    _draw_ticks(draw, frame, font)
    _draw_series(draw, frame, series)
    _draw_legend(draw, frame, list(series), font)


def save_plots(path: str | Path, panels: Sequence[tuple[str, dict]], xlabel: str = "iteration",
               width: int = 560, height: int = 260) -> None:
    """Save stacked line plots; each panel is (title, {series name: (xs, ys)})."""
    img = Image.new("RGB", (width, height * len(panels) + 16), "white")
    draw = ImageDraw.Draw(img)
    for i, (title, series) in enumerate(panels):
        _panel(draw, (0, i * height, width, (i + 1) * height), title, series)
    font = ImageFont.load_default()
    draw.text(((width - draw.textlength(xlabel, font=font)) / 2, height * len(panels)), xlabel,
              fill="black", font=font)
    save_png(img, path)
