"""PNG output: the y-axis scale of the loss plots (a pure function), ticks, and a rendered plot."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from ebm_vae.utils.images import Scale, _fmt, choose_scale, nice_ticks, save_grids, save_plots, scale_ticks


@pytest.mark.parametrize("values, kind, linthresh", [
    ([1.0, 2.0, 3.0], "linear", None),
    ([0.4, 3837.0, 500.0], "log", None),  # the VAE loss of a real run: 4 decades, all > 0
    ([-0.5, 0.5, 1e-5, 0.3, -0.2, 0.4], "linear", None),  # crosses zero, bulk near the max
    ([-1e-3, 2e7, 1.8e7, 2.2e7, 1.6e7, 1.9e7, 2.1e7, 1.7e7, 2.4e7, 3e8], "symlog", 1e7),  # f of a run
    ([-1.0e7, 2.8e8, 5e5, -3e5, 8e5, 1.2e6, -2e5, 4e5, 6e5, 7e5], "symlog", 1e5),  # the EBM loss
    ([0.0, 0.0, 0.0], "linear", None),
    ([5.0], "linear", None),
    ([1.0, math.nan, math.inf, 1e6, 1e3], "log", None),  # non-finite values are ignored
    ([2e7, 2.1e7, 1.9e7, 2e7, 3e8], "log", None),  # not 3 decades, but a spike dominates
    ([-1e-3, 2e7, 4.67e7, 1.5e7, 2.5e7], "linear", None),  # f_data of a run: wide, not dominated
    ([-1.0, 1.0, 0.5, -0.5, 20.0], "symlog", 0.1),  # crosses zero, a spike
])
def test_choose_scale(values, kind, linthresh):
    scale = choose_scale(values)
    assert scale.kind == kind
    if linthresh is not None:
        assert scale.linthresh == pytest.approx(linthresh)


def test_scales_invert_and_ticks_are_round():
    for scale in (Scale("linear"), Scale("log"), Scale("symlog", 1e3)):
        for y in (1e-2, 3.0, 1e7) if scale.kind == "log" else (-5e6, -2.0, 0.0, 7.0, 1e8):
            assert scale.inverse(scale.forward(y)) == pytest.approx(y)
    assert Scale("symlog", 10.0).forward(-990.0) == pytest.approx(-2.0)
    assert nice_ticks(0, 719, 5) == [0, 200, 400, 600]
    assert nice_ticks(-1.0, 1.0, 5) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert scale_ticks(Scale("log"), 0.3, 4000) == [1, 10, 100, 1000]
    # symlog: 0, +-linthresh, +-decades beyond it, thinned around 0 to about six
    assert scale_ticks(Scale("symlog", 1e5), -1e7, 3e8) == [-1e6, 0.0, 1e6, 1e8]
    assert scale_ticks(Scale("symlog", 1e7), -1e-3, 3e8) == [0.0, 1e7, 1e8]
    assert [_fmt(v) for v in (0.0, 1000.0, 2e7, -1e5, 0.435, 1.5e-4)] == ["0", "1000", "2e7", "-1e5",
                                                                            "0.435", "1.5e-4"]


def test_a_plot_of_a_runaway_run_renders(tmp_path):
    it = np.arange(1, 301, dtype=float)
    f = np.where(it < 20, it * 1e6, 2e7 + 1e6 * np.sin(it / 7))
    f[25] = 3e8
    panels = [("f on data and on revised samples", {"f_data": (it, f), "f_revised": (it, f * 0.99)}),
              ("VAE loss", {"loss_vae": (it, 3800 * np.exp(-it / 30) + 0.4)}),
              ("empty", {"cls_fid": (it, np.full(300, math.nan))}),
              ("one point", {"x": ([1.0], [2.0])})]
    save_plots(tmp_path / "losses.png", panels)
    img = np.asarray(Image.open(tmp_path / "losses.png").convert("RGB"))
    assert img.shape == (4 * 260 + 16, 560, 3)
    # the two panels with data drew coloured lines and dark tick labels left of the axis
    colour = img.max(axis=2).astype(int) - img.min(axis=2) > 80
    for k in range(4):
        panel = slice(k * 260, (k + 1) * 260)
        assert (colour[panel].sum() > 300) == (k < 2)
        assert (img[panel, :60].max(axis=2) < 100).sum() > (50 if k < 2 else -1)
    assert not list(tmp_path.glob(".*"))  # no temporary left (atomic write)


def test_grids_are_written(tmp_path):
    save_grids(tmp_path / "g.png", [("a", np.zeros((4, 1, 8, 8), np.float32))])
    assert Image.open(tmp_path / "g.png").size[0] > 16
