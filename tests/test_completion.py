"""Image completion: metrics, masks, loaders, conditional Langevin, training, eval and fill."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

from ebm_vae.completion.baselines import harmonic_fill, mean_fill
from ebm_vae.completion.config import completion_config_from_dict, load_completion_config
from ebm_vae.completion.evaluate import (EvalRequest, evaluate, fill_file, hole_diversity,
                                        paired_difference)
from ebm_vae.completion.masks import (FillError, MaskError, MaskSource, center_masks, load_mask,
                                      random_square_masks, resize_mask)
from ebm_vae.completion.fill import complete, complete_k
from ebm_vae.completion.networks import build_conditional_models, condition
from ebm_vae.completion.train import eval_masks, load_completion_run
from ebm_vae.core.config import LangevinConfig
from ebm_vae.core.langevin import langevin
from ebm_vae.training.checkpoints import checkpoint_iteration
from ebm_vae.data.datasets import DatasetError
from ebm_vae.data.folders import load_folder_split, read_image, to_float
from ebm_vae.eval.image_metrics import PSNR_CAP_DB, SSIM_SIGMA, l1, psnr, ssim, ssim_map
from ebm_vae.utils.provenance import code_version
from ebm_vae.utils.runlock import run_lock
from ebm_vae.utils.typed_yaml import ConfigError
from tests.conftest import signal_training
from tools import complete as complete_tool

SIZE = 16


def tiny_completion_raw(root=None, kind="random_square") -> dict:
    conv = [{"channels": 4, "kernel": 3, "stride": 2}, {"channels": 8, "kernel": 3, "stride": 2}]
    return {
        "data": {"name": "cmp_facade", "root": root},
        "mask": {"kind": kind, "size": 6},
        "model": {"image_size": SIZE, "channels": 3, "latent_dim": 4,
                  "ebm": {"conv": [{"channels": 4, "kernel": 3, "stride": 1}] + conv,
                          "head": "patch"},
                  "encoder": {"conv": conv},
                  "decoder": {"down": [4, 8, 8], "bottleneck": 8}},  # 16 -> 8 -> 4 -> 2
        "langevin": {"steps": 2, "step_size": 0.01},
        "train": {"epochs": 2, "batch_size": 4, "num_chains": 2, "gamma": 2.0, "lr_ebm": 0.001,
                  "lr_vae": 0.001, "sample_every": 2, "checkpoint_every": 2},
        "sample": {"steps": 2},
    }


def rand_images(n, size=SIZE, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, size, size)).astype(np.float32)


# ---- metrics ---------------------------------------------------------------------------------

def test_psnr_identical_is_capped_and_offset_has_closed_form():
    x = rand_images(2) * 0.5
    assert np.all(psnr(x, x) == PSNR_CAP_DB)
    d = 0.2  # in [-1, 1] units = 0.1 in [0, 1] units -> MSE 0.01 -> 20 dB
    np.testing.assert_allclose(psnr(x + d, x), 20.0, rtol=1e-6)
    masks = center_masks(2, SIZE, 4)
    y = x + d * masks  # the offset only inside the hole
    np.testing.assert_allclose(psnr(y, x, masks), 20.0, rtol=1e-6)
    np.testing.assert_allclose(psnr(y, x), 10 * np.log10(1 / (0.01 * 16 / 256)), rtol=1e-6)
    np.testing.assert_allclose(l1(y, x, masks), 0.1, rtol=1e-6)
    np.testing.assert_allclose(l1(y, x), 0.1 * 16 / 256, rtol=1e-6)


def test_ssim_of_constant_images_matches_hand_formula():
    a, b = 0.3, 0.7  # [0, 1] units; constant images have zero variance and covariance
    x = np.full((1, 3, 12, 12), 2 * a - 1)
    y = np.full((1, 3, 12, 12), 2 * b - 1)
    c1 = 0.01 ** 2
    np.testing.assert_allclose(ssim(x, y), (2 * a * b + c1) / (a * a + b * b + c1), rtol=1e-9)
    np.testing.assert_allclose(ssim(x, x), 1.0)


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Straight from Wang et al. (2004): explicit 11x11 Gaussian windows, symmetric borders."""
    x, y = (x + 1) / 2, (y + 1) / 2
    r = np.arange(-5, 6)
    g = np.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * SSIM_SIGMA ** 2))
    g /= g.sum()
    px, py = np.pad(x, 5, mode="symmetric"), np.pad(y, 5, mode="symmetric")
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            wx, wy = px[i:i + 11, j:j + 11], py[i:i + 11, j:j + 11]
            mx, my = (g * wx).sum(), (g * wy).sum()
            vx, vy = (g * (wx - mx) ** 2).sum(), (g * (wy - my) ** 2).sum()
            cov = (g * (wx - mx) * (wy - my)).sum()
            out[i, j] = ((2 * mx * my + 1e-4) * (2 * cov + 9e-4)) / (
                (mx ** 2 + my ** 2 + 1e-4) * (vx + vy + 9e-4))
    return out


def test_ssim_map_matches_direct_window_computation():
    x = rand_images(1, 13, seed=1)
    y = np.clip(x + 0.3 * rand_images(1, 13, seed=2), -1, 1)
    got = ssim_map(x, y)
    for ch in range(3):
        np.testing.assert_allclose(got[0, ch], _ssim_reference(x[0, ch], y[0, ch]), atol=1e-10)
    masks = center_masks(1, 13, 5)
    np.testing.assert_allclose(ssim(x, y, masks), got[:, :, 4:9, 4:9].mean(), rtol=1e-12)


# ---- masks -----------------------------------------------------------------------------------

def test_center_mask_covers_exactly_the_centre_square():
    m = center_masks(2, 8, 4)
    assert m.shape == (2, 1, 8, 8) and m.sum() == 2 * 16
    assert np.all(m[:, :, 2:6, 2:6] == 1)


def test_random_squares_are_full_squares_inside_the_image():
    m = random_square_masks(50, 10, 3, np.random.default_rng(0))
    for mask in m[:, 0]:
        ys, xs = np.nonzero(mask)
        assert len(ys) == 9 and ys.max() - ys.min() == 2 and xs.max() - xs.min() == 2
    tops = {tuple(np.argwhere(mask[0])[0]) for mask in m}
    assert len(tops) > 10  # positions vary
    with pytest.raises(MaskError, match="hole size"):
        random_square_masks(1, 10, 10, np.random.default_rng(0))


def test_mask_file_white_is_hole_and_size_is_checked(tmp_path):
    pic = np.zeros((6, 8), np.uint8)
    pic[1:3, 2:5] = 255
    Image.fromarray(pic).save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png", size=(6, 8))
    assert m.shape == (1, 1, 6, 8) and m.sum() == 6 and np.all(m[0, 0, 1:3, 2:5] == 1)
    with pytest.raises(MaskError, match="8x6"):
        load_mask(tmp_path / "m.png", size=(8, 8))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(MaskError, match="no hole"):
        load_mask(tmp_path / "empty.png")
    thin = np.zeros((1, 1, 32, 32), np.float32)
    thin[0, 0, 10, :] = 1  # a one-pixel line survives downsizing
    assert resize_mask(thin, 8)[0, 0, 2].all()
    src = MaskSource("file", 0, 4, str(tmp_path / "m.png"))
    assert src(3, np.random.default_rng(0)).shape == (3, 1, 4, 4)


# ---- baselines -------------------------------------------------------------------------------

def test_harmonic_fill_reproduces_a_linear_ramp_and_mean_fill_the_visible_mean():
    yy, xx = np.mgrid[0:10, 0:10]
    ramp = np.stack([0.1 * xx - 0.5, 0.05 * yy, 0.02 * (xx + yy) - 0.2])[None].astype(np.float32)
    masks = center_masks(1, 10, 4)
    damaged = ramp * (1 - masks)
    np.testing.assert_allclose(harmonic_fill(damaged, masks), ramp, atol=1e-5)
    edge = np.zeros((1, 1, 10, 10), np.float32)
    edge[0, 0, 3:7, :3] = 1  # a hole on the left border: reflecting, so a ramp along it survives
    vertical = np.repeat(ramp[:, 1:2], 3, axis=1)
    np.testing.assert_allclose(harmonic_fill(vertical * (1 - edge), edge), vertical, atol=1e-5)
    filled = mean_fill(ramp, masks)
    visible_mean = ramp[0, 0][masks[0, 0] == 0].mean()
    np.testing.assert_allclose(filled[0, 0][masks[0, 0] == 1], visible_mean, rtol=1e-5)


# ---- config ----------------------------------------------------------------------------------

def test_config_checks_mask_and_shipped_files_load():
    raw = tiny_completion_raw()
    raw["mask"]["size"] = SIZE
    with pytest.raises(ConfigError, match="mask.size"):
        completion_config_from_dict(raw)
    raw = tiny_completion_raw(kind="file")
    with pytest.raises(ConfigError, match="mask.path"):
        completion_config_from_dict(raw)
    raw = tiny_completion_raw()
    raw["model"]["decoder"]["down"] = [4, 4, 4, 4, 4]  # 16 is not divisible by 2^5
    with pytest.raises(ConfigError, match="model.decoder.down"):
        completion_config_from_dict(raw)
    raw = tiny_completion_raw()
    raw["model"]["condition"] = {"conv": [], "code_dim": 8}  # the flat-code decoder is gone
    with pytest.raises(ConfigError, match="model.condition"):
        completion_config_from_dict(raw)
    paris = load_completion_config("experiments/paris_completion.yaml")
    assert (paris.model.image_size, paris.mask.kind, paris.mask.size) == (128, "center", 64)
    facade = load_completion_config("experiments/facade_completion.yaml")
    assert (facade.langevin.steps, facade.train.batch_size, facade.train.lr_ebm) == (20, 16, 0.0005)
    assert facade.model.ebm.mean is not None and facade.model.decoder.down[-1] == 512
    assert load_completion_config("experiments/facade_completion_64.yaml").model.image_size == 64


# ---- loaders ---------------------------------------------------------------------------------

def _save(path, color, size=(20, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_paris_layouts(tmp_path):
    _save(tmp_path / "a/paris_train/x/1.png", (255, 0, 0))
    _save(tmp_path / "a/paris_train/2.jpg", (0, 255, 0))
    _save(tmp_path / "a/paris_eval/paris_eval_gt/3.png", (0, 0, 255))
    train = load_folder_split("paris_street_view", str(tmp_path / "a"), "train", 8, "center_crop")
    assert train.shape == (2, 3, 8, 8) and train.dtype == np.uint8
    test = load_folder_split("paris_street_view", str(tmp_path / "a"), "test", 8, "stretch")
    assert test.shape == (1, 3, 8, 8) and np.all(test[0, 2] == 255) and np.all(test[0, 0] == 0)
    _save(tmp_path / "b/train/1.png", (9, 9, 9))
    assert len(load_folder_split("paris_street_view", str(tmp_path / "b"), "train", 8, "stretch")) == 1
    with pytest.raises(DatasetError, match="test/ or paris_eval/"):
        load_folder_split("paris_street_view", str(tmp_path / "b"), "test", 8, "stretch")
    with pytest.raises(DatasetError, match="on request"):
        load_folder_split("paris_street_view", None, "train", 8, "stretch")
    with pytest.raises(DatasetError, match="does not exist"):
        load_folder_split("paris_street_view", str(tmp_path / "nope"), "train", 8, "stretch")


def test_facade_base_and_pix2pix_layouts(tmp_path):
    for i in range(1, 21):
        _save(tmp_path / "base" / f"cmp_b{i:04d}.jpg", (i * 10, 0, 0))
    train = load_folder_split("cmp_facade", str(tmp_path / "base"), "train", 4, "stretch")
    test = load_folder_split("cmp_facade", str(tmp_path / "base"), "test", 4, "stretch")
    assert len(train) == 18 and len(test) == 2  # every tenth (b0010, b0020) is test
    pair = Image.new("RGB", (16, 8), (0, 0, 255))
    pair.paste((255, 255, 0), (0, 0, 8, 8))  # photo on the left, labels on the right
    (tmp_path / "p2p/test").mkdir(parents=True)
    pair.save(tmp_path / "p2p/test/1.png")
    got = load_folder_split("cmp_facade", str(tmp_path / "p2p"), "test", 4, "stretch")
    assert np.all(got[0, 0] == 255) and np.all(got[0, 2] == 0)
    _save(tmp_path / "bad/train/1.png", (0, 0, 0), size=(10, 10))
    with pytest.raises(DatasetError, match="2:1"):
        load_folder_split("cmp_facade", str(tmp_path / "bad"), "train", 4, "stretch")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither"):
        load_folder_split("cmp_facade", str(tmp_path / "empty"), "train", 4, "stretch")


def _save_16_bit(path: Path, grey: np.ndarray) -> np.ndarray:
    """Save uint16 `grey` as a 16-bit greyscale PNG; return the 8-bit values it stands for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grey.astype(np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")  # Pillow reads it as 16-bit
    return np.round(grey / 65535 * 255).astype(np.uint8)


def test_16_bit_greyscale_pictures_and_masks_are_scaled_not_clipped(tmp_path):
    """Pillow's own conversion clips 16-bit values at 255: nearly every pixel came out white."""
    grey = np.arange(8 * 8).reshape(8, 8) * 1000
    eight = _save_16_bit(tmp_path / "b/train/pic.png", grey)
    assert 0 < eight.mean() < 255
    picture = read_image(tmp_path / "b/train/pic.png")
    folder = load_folder_split("paris_street_view", str(tmp_path / "b"), "train", 8, "stretch")
    for c in range(3):
        np.testing.assert_array_equal(picture[0, c], to_float(eight))
        np.testing.assert_array_equal(folder[0, c], eight)
    _save_16_bit(tmp_path / "mask.png", grey)  # white (>= 128 of 255) only from 128 * 257 up
    np.testing.assert_array_equal(load_mask(tmp_path / "mask.png")[0, 0], eight >= 128)


# ---- conditional Langevin and filling --------------------------------------------------------

def conditional_langevin(ebm, y, c, steps, lv):
    """Core's Langevin under f(., c), as Algorithm 1's `revise` runs it with a condition."""
    with paddle.no_grad():
        cond = ebm.chain_inputs(c)
    return langevin(ebm, y, lv, steps, cond, lambda v: ebm.project(v, c))


def test_conditional_langevin_keeps_the_condition_and_depends_on_it():
    cfg = completion_config_from_dict(tiny_completion_raw())
    paddle.seed(0)
    models = build_conditional_models(cfg.model)
    y0 = paddle.to_tensor(rand_images(4) * 0.1)
    images, masks = rand_images(4, seed=3), center_masks(4, SIZE, 6)
    c = condition(paddle.to_tensor(images), paddle.to_tensor(masks))
    c_before = c.numpy().copy()
    lv = LangevinConfig(steps=3, step_size=0.05, ref_sigma=1.0, noise=True)
    y = conditional_langevin(models.ebm, y0, c, 3, lv)
    np.testing.assert_array_equal(c.numpy(), c_before)
    visible = np.broadcast_to(masks == 0, images.shape)
    np.testing.assert_array_equal(y.numpy()[visible], images[visible])  # visible pixels are c's
    assert not np.allclose(y.numpy()[~visible], y0.numpy()[~visible])  # the hole moved
    lv = LangevinConfig(steps=3, step_size=0.05, ref_sigma=1.0, noise=False)
    y = conditional_langevin(models.ebm, y0, c, 3, lv)
    chunked = conditional_langevin(models.ebm, y0, c, 3, LangevinConfig(3, 0.05, 1.0, False, 3))
    np.testing.assert_allclose(chunked.numpy(), y.numpy(), atol=1e-6)
    other = conditional_langevin(models.ebm, y0, c * 0.5, 3, lv)
    assert not np.allclose(other.numpy(), y.numpy())
    assert all(not p.stop_gradient for p in models.ebm.parameters())  # unfrozen afterwards


def test_fill_is_the_models_own_hole_content_with_visible_pixels_bit_exact():
    """Not just "visible pixels pasted back": the hole holds exactly g(z, c) revised by the
    conditional Langevin chain of *this* image's condition, z from the seeded draw, batch by
    batch. A fill that pastes anything else (zeros, the mean, another image's fill, the
    unrevised proposal) fails."""
    cfg = completion_config_from_dict(tiny_completion_raw())
    paddle.seed(0)
    models = build_conditional_models(cfg.model)
    images = rand_images(3)
    masks = random_square_masks(3, SIZE, 5, np.random.default_rng(1))
    lv = LangevinConfig(steps=2, step_size=0.05, ref_sigma=1.0, noise=False)
    paddle.seed(7)
    proposal, out = complete(models, images, masks, cfg.model.latent_dim, 2, lv, batch_size=2,
                             with_proposal=True)
    visible = np.broadcast_to(masks == 0, images.shape)
    np.testing.assert_array_equal(out[visible], images[visible])
    np.testing.assert_array_equal(proposal[visible], images[visible])
    paddle.seed(7)  # the same draws, by hand
    want_hat, want = [], []
    for sl in (slice(0, 2), slice(2, 3)):
        c = condition(paddle.to_tensor(images[sl]), paddle.to_tensor(masks[sl]))
        y_hat = models.decoder(paddle.randn([len(images[sl]), cfg.model.latent_dim]), c)
        want_hat.append(np.clip(y_hat.numpy(), -1, 1))
        want.append(np.clip(conditional_langevin(models.ebm, y_hat, c, 2, lv).numpy(), -1, 1))
    hole = ~visible
    np.testing.assert_allclose(proposal[hole], np.concatenate(want_hat)[hole], atol=1e-6)
    np.testing.assert_allclose(out[hole], np.concatenate(want)[hole], atol=1e-6)
    assert np.abs(out - proposal)[hole].max() > 1e-4  # the revision moved the hole


# ---- the U-Net decoder g(z, c) ---------------------------------------------------------------

@pytest.mark.parametrize("source", ["tiny", "tiny-resize", "experiments/facade_completion_64.yaml",
                                    "experiments/facade_completion.yaml",
                                    "experiments/paris_completion.yaml"])
def test_networks_have_the_configured_shapes_at_every_scale(source):
    raw = tiny_completion_raw()
    raw["model"]["decoder"]["up"] = "resize" if source == "tiny-resize" else "deconv"
    cfg = (completion_config_from_dict(raw) if source.startswith("tiny")
           else load_completion_config(source))
    m, s = cfg.model, cfg.model.image_size
    paddle.seed(0)
    models = build_conditional_models(m)
    y = paddle.to_tensor(rand_images(2, s))
    c = condition(y, paddle.to_tensor(center_masks(2, s, s // 2)))
    z = paddle.randn([2, m.latent_dim])
    g = models.decoder
    h, sizes = c, []
    with paddle.no_grad():
        for conv, ch in zip(g.down, m.decoder.down):  # down path: halves each time
            h = conv(h)
            sizes.append(tuple(h.shape))
        assert sizes == [(2, ch, s // 2 ** (i + 1), s // 2 ** (i + 1))
                         for i, ch in enumerate(m.decoder.down)]
        out = g(z, c)
        assert tuple(out.shape) == (2, 3, s, s) and float(out.abs().max()) <= 1.0
        assert tuple(models.ebm(y, c).shape) == (2,)
        mu, log_sigma = models.encoder(y, c)
        assert tuple(mu.shape) == tuple(log_sigma.shape) == (2, m.latent_dim)
    # up path: one transposed conv per scale, each landing on the skip map of that scale
    assert len(g.up) == len(m.decoder.down)


@pytest.mark.parametrize("up", ["deconv", "resize"])
def test_unet_skips_carry_the_border_into_the_hole_without_the_bottleneck(up):
    raw = tiny_completion_raw()
    raw["model"]["decoder"]["up"] = up
    cfg = completion_config_from_dict(raw)
    paddle.seed(0)
    g = build_conditional_models(cfg.model).decoder
    for p in g.bottleneck.parameters():  # zero the bottleneck path: its output is leaky(0) = 0
        p.set_value(paddle.zeros(p.shape))
    images = rand_images(1)
    masks = center_masks(1, SIZE, 6)  # hole rows/cols 5..10
    z = paddle.randn([1, cfg.model.latent_dim])

    def fill(imgs, zz=z):
        with paddle.no_grad():
            return g(zz, condition(paddle.to_tensor(imgs), paddle.to_tensor(masks))).numpy()

    base = fill(images)
    np.testing.assert_array_equal(fill(images, paddle.randn(z.shape)), base)  # z only at the bottleneck
    beside = images.copy()
    beside[:, :, 5:11, 4] += 0.5  # the visible column just left of the hole
    hole = np.broadcast_to(masks == 1, base.shape)
    assert np.abs(fill(beside) - base)[hole].max() > 1e-4
    far = images.copy()  # a visible pixel far from the hole (outside every skip's reach of it)
    far[:, :, 0, 15] += 0.5
    assert np.abs(fill(far) - base)[:, :, 5:11, 5:7].max() < np.abs(fill(beside) - base)[
        :, :, 5:11, 5:7].max()


def test_z_reaches_the_output_and_k_fills_differ():
    cfg = completion_config_from_dict(tiny_completion_raw())
    paddle.seed(0)
    models = build_conditional_models(cfg.model)
    images = rand_images(2)
    masks = center_masks(2, SIZE, 6)
    paddle.seed(3)
    proposals, fills = complete_k(models, images, masks, 3, cfg.model.latent_dim, 2, cfg.langevin)
    assert fills.shape == (3, 2, 3, SIZE, SIZE) and proposals.shape == fills.shape
    hole = np.broadcast_to(masks == 1, images.shape)
    for i in range(3):
        np.testing.assert_array_equal(fills[i][~hole], images[~hole])
        for j in range(i):
            assert np.abs(fills[i] - fills[j])[hole].mean() > 1e-4
            assert np.abs(proposals[i] - proposals[j])[hole].mean() > 1e-4  # z matters
    assert np.all(hole_diversity(fills, masks) > 0)


def test_gaussian_term_of_the_ebm_is_the_closed_form_and_langevin_pulls_to_mu():
    raw = tiny_completion_raw()
    raw["model"]["ebm"]["mean"] = {"down": [4, 8], "bottleneck": 8}
    raw["model"]["ebm"]["mean_sigma"] = 0.5
    raw["model"]["ebm"]["net_lr_scale"] = 0.25
    cfg = completion_config_from_dict(raw)
    paddle.seed(0)
    ebm = build_conditional_models(cfg.model).ebm
    assert all(p.optimize_attr["learning_rate"] == 0.25 for p in ebm.head.parameters())
    assert all(p.optimize_attr["learning_rate"] == 1.0 for p in ebm.mean.parameters())
    for p in ebm.head.parameters():  # net(y, c) = 0: only the Gaussian term is left
        p.set_value(paddle.zeros(p.shape))
    images, masks = rand_images(2), center_masks(2, SIZE, 6)
    c = condition(paddle.to_tensor(images), paddle.to_tensor(masks))
    y = rand_images(2, seed=9)
    with paddle.no_grad():
        mu = ebm.mean_image(c).numpy()
        f = ebm(paddle.to_tensor(y), c).numpy()
    want = -((masks * (y - mu)) ** 2).reshape(2, -1).sum(axis=1) / (2 * 0.5 ** 2)
    np.testing.assert_allclose(f, want, rtol=1e-5)
    # noiseless Langevin with delta^2 / (2 sigma^2) = 1/2: the hole's gap to mu halves per step
    lv = LangevinConfig(steps=1, step_size=0.5, ref_sigma=None, noise=False)
    y1 = conditional_langevin(ebm, paddle.to_tensor(y), c, 1, lv).numpy()
    hole = np.broadcast_to(masks == 1, y.shape)
    np.testing.assert_allclose((y1 - mu)[hole], 0.5 * (y - mu)[hole], atol=1e-5)


def test_hole_diversity_known_answers():
    masks = np.zeros((2, 1, 4, 4), np.float32)
    masks[0, 0, :2, :2] = 1  # 4 hole pixels
    masks[1, 0, 1:, 1:] = 1  # 9 hole pixels
    fills = np.zeros((3, 2, 3, 4, 4), np.float32)
    for k, v in enumerate((-0.2, 0.2, 0.6)):  # [-1, 1] units: pairwise gaps 0.4, 0.8, 0.4
        fills[k] = v * masks
    fills[:, :, :, 0, 3] = [[[9.0]], [[-9.0]], [[3.0]]]  # outside both holes: ignored
    np.testing.assert_allclose(hole_diversity(fills, masks), [(0.4 + 0.8 + 0.4) / 3 / 2] * 2)
    same = np.repeat(fills[:1], 2, axis=0)
    np.testing.assert_array_equal(hole_diversity(same, masks), [0.0, 0.0])
    fills[1, 1, 0] += 0.3 * masks[1, 0]  # one channel of one fill of image 1: gaps 0.5, 0.8, 0.3
    np.testing.assert_allclose(hole_diversity(fills, masks), [0.8 / 3, (0.5 + 0.8 + 0.3) / 3 / 2],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        hole_diversity(fills[:1], masks)


def test_paired_difference_known_answers():
    ours = {"psnr_hole": np.array([20.0, 18.0, 16.0]), "ssim_hole": np.array([0.5, 0.4, 0.3]),
            "l1_hole": np.array([0.1, 0.3, 0.2])}
    other = {"psnr_hole": np.array([19.0, 19.0, 13.0]), "ssim_hole": np.array([0.5, 0.3, 0.2]),
             "l1_hole": np.array([0.2, 0.2, 0.2])}
    d = paired_difference(ours, other)
    assert d["psnr_hole"]["mean_diff"] == pytest.approx(1.0)  # (1 - 1 + 3) / 3
    assert d["psnr_hole"]["std_err"] == pytest.approx(np.std([1, -1, 3], ddof=1) / np.sqrt(3))
    assert d["psnr_hole"]["ours_better"] == pytest.approx(2 / 3)
    assert d["ssim_hole"]["ours_better"] == pytest.approx(2 / 3)  # a tie is not better
    assert d["l1_hole"]["ours_better"] == pytest.approx(1 / 3)  # lower L1 is better
    assert d["l1_hole"]["mean_diff"] == pytest.approx(0.0, abs=1e-12)


# ---- training, eval and fill end to end ------------------------------------------------------

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A pix2pix-layout facade folder of generated pictures and a 3-iteration run on it."""
    root = tmp_path_factory.mktemp("facades")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        (root / split).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)).save(
                root / split / f"{i}.png")
    cfg_path = root / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_completion_raw(str(root))))
    run = tmp_path_factory.mktemp("run") / "r"
    rc = complete_tool.main(["train", "-c", str(cfg_path), "--out", str(run), "--max-iters", "2",
                             "--no-progress"])
    assert rc == 0
    return root, run


def test_training_writes_grid_checkpoint_and_resumes(trained_run):
    root, run = trained_run
    assert (run / "samples/iter_0000002.png").is_file() and (run / "losses.png").is_file()
    assert (run / "checkpoints/iter_0000002/state.json").is_file()
    rows = (run / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and "hole_l1" in rows[0]
    assert complete_tool.main(["train", "--resume", str(run), "--max-iters", "3",
                               "--no-progress"]) == 0
    assert len((run / "log.csv").read_text().splitlines()) == 4
    cfg, _ = load_completion_run(run)
    assert cfg.model.image_size == SIZE


def test_resume_refuses_a_set_that_changes_the_networks(trained_run, capsys):
    _, run = trained_run
    config = (run / "config.yaml").read_bytes()
    capsys.readouterr()
    assert complete_tool.main(["train", "--resume", str(run), "--set", "model.decoder.bottleneck=4",
                               "--set", "train.gamma=1", "--max-iters", "9", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--set model.decoder.bottleneck=4" in err[0] and "gamma" not in err[0]
    assert (run / "config.yaml").read_bytes() == config  # nothing was written


def test_eval_reports_the_metrics_of_the_actual_fills(trained_run, tmp_path):
    """The reported numbers are those of the fills themselves (recomputed here from the same
    seeded holes and draws), not merely of any fill that keeps the visible pixels."""
    from ebm_vae.completion.evaluate import HARMONIC, MEAN, MEAN_OF_K, OURS, PROPOSAL
    from ebm_vae.eval.image_metrics import completion_metrics, sharpness_ratio
    root, run = trained_run
    assert complete_tool.main(["eval", "--ckpt", str(run), "--out", str(tmp_path), "--samples",
                               "3", "--seed", "4"]) == 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    from ebm_vae.training.checkpoints import checkpoint_iteration
    assert report["images"] == 3 and report["samples"] == 3
    assert report["iteration"] == checkpoint_iteration(run)
    assert report["code"] == code_version()  # which code made the numbers
    assert set(report["methods"]) == {OURS, PROPOSAL, MEAN_OF_K, HARMONIC, MEAN}
    cfg, models = load_completion_run(run)
    images = to_float(load_folder_split("cmp_facade", str(root), "test", SIZE, "stretch"))
    masks = eval_masks(cfg, 3, 4)
    paddle.seed(4)
    proposals, fills = complete_k(models, images, masks, 3, cfg.model.latent_dim, 2, cfg.langevin)
    want = {OURS: fills[0], PROPOSAL: proposals[0], MEAN_OF_K: fills.mean(axis=0),
            HARMONIC: harmonic_fill(images, masks), MEAN: mean_fill(images, masks)}
    for name, filled in want.items():
        got = report["methods"][name]
        for key, values in completion_metrics(filled, images, masks).items():
            np.testing.assert_allclose(got[key]["mean"], values.mean(), rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(got["sharpness"], sharpness_ratio(filled, images, masks),
                                   rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(report["diversity_l1_hole"]["revised"]["mean"],
                               hole_diversity(fills, masks).mean(), rtol=1e-5)
    paired = paired_difference(completion_metrics(fills[0], images, masks),
                               completion_metrics(want[HARMONIC], images, masks))
    for key, entry in report["paired_vs_harmonic"].items():
        np.testing.assert_allclose(entry["mean_diff"], paired[key]["mean_diff"], rtol=1e-5, atol=1e-9)
        assert entry["ours_better"] == paired[key]["ours_better"]
    pic = Image.open(tmp_path / "completions.png")  # input, proposal, 3 fills, harmonic, mean, truth
    assert pic.size[0] > 8 * 2 * SIZE


def test_eval_on_a_mask_kind_training_did_not_use(trained_run, tmp_path):
    root, run = trained_run  # trained on random squares
    report = evaluate(run, tmp_path, EvalRequest(mask_kind="center", mask_size=8))
    assert report["mask"] == {"kind": "center", "size": 8,
                              "trained_on": {"kind": "random_square", "size": 6}}
    images = to_float(load_folder_split("cmp_facade", str(root), "test", SIZE, "stretch"))
    from ebm_vae.eval.image_metrics import completion_metrics
    want = completion_metrics(harmonic_fill(images, center_masks(3, SIZE, 8)), images,
                              center_masks(3, SIZE, 8))["psnr_hole"].mean()
    np.testing.assert_allclose(report["methods"]["harmonic interpolation"]["psnr_hole"]["mean"],
                               want, rtol=1e-6)
    with pytest.raises(MaskError, match="hole size"):
        evaluate(run, tmp_path, EvalRequest(mask_kind="center", mask_size=SIZE))
    with pytest.raises(DatasetError, match="val/"):  # checkpoint selection on val/ where there is one
        evaluate(run, tmp_path, EvalRequest(split="val"))


def test_fill_samples_and_bad_mask_file_give_one_line(trained_run, tmp_path, capsys):
    _, run = trained_run
    pic = np.random.default_rng(5).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pic).save(tmp_path / "in.png")
    hole = np.zeros((SIZE, SIZE), np.uint8)
    hole[4:10, 5:12] = 255
    Image.fromarray(hole).save(tmp_path / "mask.png")
    assert complete_tool.main(["fill", "--ckpt", str(run), "--image", str(tmp_path / "in.png"),
                               "--mask", str(tmp_path / "mask.png"), "--out",
                               str(tmp_path / "out.png"), "--samples", "3"]) == 0
    outs = [np.asarray(Image.open(tmp_path / f"out_{i}.png")) for i in (1, 2, 3)]
    assert (tmp_path / "out_grid.png").is_file()
    for o in outs:
        np.testing.assert_array_equal(o[hole == 0], pic[hole == 0])
    assert not np.array_equal(outs[0][hole > 0], outs[1][hole > 0])
    (tmp_path / "notes.png").write_text("this is not an image")
    capsys.readouterr()
    assert complete_tool.main(["fill", "--ckpt", str(run), "--image", str(tmp_path / "in.png"),
                               "--mask", str(tmp_path / "notes.png"), "--out",
                               str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an image" in err[0] and "notes.png" in err[0]
    assert complete_tool.main(["eval", "--ckpt", str(tmp_path), "--out", str(tmp_path)]) == 2


def test_training_evaluation_logs_a_curve(tmp_path, trained_run):
    root, _ = trained_run
    raw = tiny_completion_raw(str(root))
    raw["eval"] = {"every": 1}
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert complete_tool.main(["train", "-c", str(cfg_path), "--out", str(run), "--max-iters",
                               "2", "--no-progress"]) == 0
    # every evaluated state is kept as a checkpoint folder (eval.keep_checkpoints), and the best
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["best", "iter_0000001", "iter_0000002"]
    assert complete_tool.main(["curve", "--ckpt", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert Image.open(tmp_path / "c.png").size[0] > 100
    report = evaluate(run, tmp_path / "ev",
                      EvalRequest(checkpoint=run / "checkpoints/iter_0000001"))
    assert report["iteration"] == 1 and report["training_seconds"] > 0
    with open(run / "log.csv") as fh:
        first = next(__import__("csv").DictReader(fh))
    np.testing.assert_allclose(report["methods"]["harmonic interpolation"]["psnr_hole"]["mean"],
                               float(first["psnr_hole_harmonic"]), rtol=1e-6)
    np.testing.assert_allclose(report["methods"]["harmonic interpolation"]["sharpness"],
                               float(first["sharpness_harmonic"]), rtol=1e-6)
    assert float(first["sharpness_revised"]) > 0 and float(first["sharpness_proposal"]) > 0


def test_fill_of_a_16_bit_picture_keeps_its_visible_pixels(trained_run, tmp_path):
    _, run = trained_run
    grey = np.random.default_rng(3).integers(0, 65536, (SIZE, SIZE))
    eight = _save_16_bit(tmp_path / "in.png", grey)
    hole = np.zeros((SIZE, SIZE), np.uint8)
    hole[4:10, 5:12] = 255
    Image.fromarray(hole).save(tmp_path / "mask.png")
    assert complete_tool.main(["fill", "--ckpt", str(run), "--image", str(tmp_path / "in.png"),
                               "--mask", str(tmp_path / "mask.png"), "--out",
                               str(tmp_path / "out.png")]) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c][hole == 0], eight[hole == 0])


def test_train_refuses_a_run_folder_in_use(trained_run, capsys):
    _, run = trained_run
    log = (run / "log.csv").read_bytes()
    capsys.readouterr()
    with run_lock(run):  # held by this process: the trainer's own lock is refused all the same
        assert complete_tool.main(["train", "--resume", str(run), "--max-iters", "9",
                                   "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {run} is in use by process {os.getpid()} (started ")
    assert (run / "log.csv").read_bytes() == log


@pytest.mark.slow
def test_train_stops_on_sigint_and_sigterm_with_130_and_143(trained_run, tmp_path):
    """As tools/train.py: a checkpoint at the last iteration, one line, exit 128 + signal."""
    root, _ = trained_run
    raw = tiny_completion_raw(str(root))
    raw["train"].update(epochs=1000, checkpoint_every=1000)
    cfg_path = tmp_path / "long.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    start = ["-c", str(cfg_path), "--out", str(run)]
    resume = ["--resume", str(run)]
    for sig, code, args in [(signal.SIGINT, 130, start), (signal.SIGTERM, 143, resume)]:
        returncode, err, before = signal_training(["tools/complete.py", "train", *args], run, sig)
        assert returncode == code, err
        line = [x for x in err.splitlines() if x.startswith("interrupted:")]
        assert len(line) == 1 and "Traceback" not in err, err
        it = checkpoint_iteration(run)
        assert f"{sig.name}: stopped after iteration {it}" in line[0] and it >= before + 2


def test_fill_checks_size_and_keeps_visible_pixels(trained_run, tmp_path):
    _, run = trained_run
    pic = np.random.default_rng(5).integers(0, 256, (24, 30, 3), dtype=np.uint8)
    Image.fromarray(pic).save(tmp_path / "in.png")
    hole = np.zeros((24, 30), np.uint8)
    hole[5:12, 8:20] = 255
    Image.fromarray(hole).save(tmp_path / "mask.png")
    with pytest.raises(FillError, match="16x16"):
        fill_file(run, tmp_path / "in.png", tmp_path / "mask.png", tmp_path / "out.png")
    assert complete_tool.main(["fill", "--ckpt", str(run), "--image", str(tmp_path / "in.png"),
                               "--mask", str(tmp_path / "mask.png"), "--out",
                               str(tmp_path / "out.png")]) == 2
    fill_file(run, tmp_path / "in.png", tmp_path / "mask.png", tmp_path / "out.png", resize=True)
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == pic.shape
    np.testing.assert_array_equal(out[hole == 0], pic[hole == 0])
    Image.fromarray(np.zeros((10, 10), np.uint8) + 255).save(tmp_path / "small.png")
    with pytest.raises(MaskError, match="10x10"):
        fill_file(run, tmp_path / "in.png", tmp_path / "small.png", tmp_path / "out.png")


def test_train_needs_data_root(tmp_path):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_completion_raw(None)))
    assert complete_tool.main(["train", "-c", str(cfg_path), "--out", str(tmp_path / "r"),
                               "--no-progress"]) == 2


def test_eval_with_unconditional_baseline_and_size_mismatch(trained_run, tmp_path):
    from ebm_vae.core.config import config_from_dict
    from ebm_vae.training.generation import train_generation
    from tests.conftest import TINY
    _, run = trained_run
    raw = {**TINY, "model": {**TINY["model"], "image_size": SIZE, "channels": 3, "decoder": {
        "layers": [{"channels": 4, "kernel": 4, "stride": 1},
                   {"channels": 4, "kernel": 4, "stride": 2, "padding": 1},
                   {"channels": 3, "kernel": 4, "stride": 2, "padding": 1}]}}}
    train_generation(config_from_dict(raw), tmp_path / "gen", max_iters=1, images=rand_images(6),
                     progress=False)
    report = evaluate(run, tmp_path / "ev", EvalRequest(uncond_dir=tmp_path / "gen"))
    uncond = report["methods"]["unconditional model (encode-decode-revise-paste)"]
    assert uncond["psnr_image"]["mean"] > uncond["psnr_hole"]["mean"]
    small = {**TINY, "model": {**TINY["model"], "channels": 3, "decoder": {
        "layers": [{"channels": 4, "kernel": 4, "stride": 1},
                   {"channels": 3, "kernel": 4, "stride": 2, "padding": 1}]}}}
    train_generation(config_from_dict(small), tmp_path / "gen8", max_iters=1,
                     images=rand_images(6, size=8), progress=False)
    with pytest.raises(FillError, match=r"\(3, 8, 8\)"):
        evaluate(run, tmp_path / "ev8", EvalRequest(uncond_dir=tmp_path / "gen8"))


def test_a_phone_picture_is_filled_as_it_is_shown(trained_run, tmp_path, capsys):
    """A JPEG stored 16 wide x 24 high with EXIF orientation 6 (shown 24x16) and a mask drawn on
    the picture as shown: the fill reads both as shown and writes the fill the same way."""
    _, run = trained_run
    stored = np.zeros((24, 16, 3), np.uint8)
    stored[:4] = 255  # the stored top rows: the right-hand columns once shown
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    im.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    shown = np.asarray(Image.open(tmp_path / "phone.jpg").transpose(Image.Transpose.ROTATE_270))
    hole = np.zeros((16, 24), np.uint8)
    hole[4:10, 2:9] = 255  # on the left, where the picture is dark
    Image.fromarray(hole).save(tmp_path / "mask.png")
    assert complete_tool.main(["fill", "--ckpt", str(run), "--image", str(tmp_path / "phone.jpg"),
                               "--mask", str(tmp_path / "mask.png"), "--out",
                               str(tmp_path / "out.png"), "--resize", "--threads", "1"]) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (16, 24, 3)
    np.testing.assert_array_equal(out[hole == 0], shown[hole == 0])
    assert out[:, -4:].min() > 200 and out[:, :2].max() < 50  # white on the right, as shown


def test_fills_that_would_not_fit_in_memory_are_refused_first(trained_run, tmp_path, capsys):
    _, run = trained_run
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "in.png")
    hole = np.zeros((16, 16), np.uint8)
    hole[4:8, 4:8] = 255
    Image.fromarray(hole).save(tmp_path / "mask.png")
    assert complete_tool.main(["fill", "--ckpt", str(run), "--image", str(tmp_path / "in.png"),
                               "--mask", str(tmp_path / "mask.png"), "--out",
                               str(tmp_path / "out.png"), "--samples", str(10 ** 8)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {10 ** 8} fills of a 16x16 picture"), err
    assert "of memory, but" in err[0] and "is free" in err[0] and "--samples" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "mask.png"]


def test_eval_and_fill_refuse_counts_below_their_range(tmp_path, capsys):
    for argv, message in [(["eval", "--ckpt", str(tmp_path), "--limit", "-2"], "--limit must be >= 1"),
                          (["fill", "--ckpt", str(tmp_path), "--image", "a", "--mask", "b", "--out",
                            "c.png", "--steps", "-1"], "--steps must be >= 0")]:
        assert complete_tool.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
