"""Image completion: metrics, masks, loaders, conditional Langevin, training, eval and fill."""
from __future__ import annotations

import json
import math

import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

from ebm_vae.completion.baselines import harmonic_fill, mean_fill
from ebm_vae.completion.config import completion_config_from_dict, load_completion_config
from ebm_vae.completion.evaluate import FillError, evaluate, fill_file
from ebm_vae.completion.masks import (MaskError, MaskSource, center_masks, load_mask,
                                      random_square_masks, resize_mask)
from ebm_vae.completion.model import (build_conditional_models, complete, condition,
                                      conditional_langevin, load_completion_run)
from ebm_vae.core.config import ConfigError, LangevinConfig
from ebm_vae.data.datasets import DatasetError
from ebm_vae.data.folders import load_folder_split
from ebm_vae.eval.image_metrics import PSNR_CAP_DB, SSIM_SIGMA, l1, psnr, ssim, ssim_map
from tools import complete as complete_tool

SIZE = 16


def tiny_completion_raw(root=None, kind="random_square") -> dict:
    conv = [{"channels": 4, "kernel": 3, "stride": 2}, {"channels": 8, "kernel": 3, "stride": 2}]
    return {
        "data": {"name": "cmp_facade", "root": root},
        "mask": {"kind": kind, "size": 6},
        "model": {"image_size": SIZE, "channels": 3, "latent_dim": 4,
                  "ebm": {"conv": conv}, "encoder": {"conv": conv},
                  "condition": {"conv": conv, "code_dim": 8},
                  "decoder": {"layers": [
                      {"channels": 8, "kernel": 4, "stride": 1},                # 1 -> 4
                      {"channels": 4, "kernel": 4, "stride": 2, "padding": 1},  # 4 -> 8
                      {"channels": 3, "kernel": 4, "stride": 2, "padding": 1}]}},  # 8 -> 16
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
    raw["model"]["decoder"]["layers"][-1]["channels"] = 1
    with pytest.raises(ConfigError, match="model.decoder.layers"):
        completion_config_from_dict(raw)
    paris = load_completion_config("experiments/paris_completion.yaml")
    assert (paris.model.image_size, paris.mask.kind, paris.mask.size) == (128, "center", 64)
    facade = load_completion_config("experiments/facade_completion.yaml")
    assert (facade.langevin.steps, facade.train.batch_size, facade.train.lr_ebm) == (20, 16, 0.003)
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


# ---- conditional Langevin and filling --------------------------------------------------------

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


def test_completion_keeps_visible_pixels():
    cfg = completion_config_from_dict(tiny_completion_raw())
    paddle.seed(0)
    models = build_conditional_models(cfg.model)
    images = rand_images(3)
    masks = random_square_masks(3, SIZE, 5, np.random.default_rng(1))
    out = complete(models, images, masks, cfg.model.latent_dim, 2, cfg.langevin, batch_size=2)
    visible = np.broadcast_to(masks == 0, images.shape)
    np.testing.assert_array_equal(out[visible], images[visible])
    assert not np.allclose(out[~visible], images[~visible])


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


def test_eval_reports_metrics_for_model_and_baselines(trained_run, tmp_path):
    root, run = trained_run
    assert complete_tool.main(["eval", "--ckpt", str(run), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["images"] == 3
    assert set(report["methods"]) == {"ours (conditional EBM + cVAE)", "harmonic interpolation",
                                      "mean of visible pixels"}
    for metrics in report["methods"].values():
        assert math.isfinite(metrics["psnr_hole"]["mean"])
        assert metrics["psnr_image"]["mean"] > metrics["psnr_hole"]["mean"]  # visible part exact
    assert Image.open(tmp_path / "completions.png").size[0] > 5 * SIZE


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
    from ebm_vae.core.train import train_generation
    from tests.conftest import TINY
    _, run = trained_run
    raw = {**TINY, "model": {**TINY["model"], "image_size": SIZE, "channels": 3, "decoder": {
        "layers": [{"channels": 4, "kernel": 4, "stride": 1},
                   {"channels": 4, "kernel": 4, "stride": 2, "padding": 1},
                   {"channels": 3, "kernel": 4, "stride": 2, "padding": 1}]}}}
    train_generation(config_from_dict(raw), tmp_path / "gen", max_iters=1, images=rand_images(6),
                     progress=False)
    report = evaluate(run, tmp_path / "ev", uncond_dir=tmp_path / "gen")
    uncond = report["methods"]["unconditional model (encode-decode-revise-paste)"]
    assert uncond["psnr_image"]["mean"] > uncond["psnr_hole"]["mean"]
    small = {**TINY, "model": {**TINY["model"], "channels": 3, "decoder": {
        "layers": [{"channels": 4, "kernel": 4, "stride": 1},
                   {"channels": 3, "kernel": 4, "stride": 2, "padding": 1}]}}}
    train_generation(config_from_dict(small), tmp_path / "gen8", max_iters=1,
                     images=rand_images(6, size=8), progress=False)
    with pytest.raises(ValueError, match=r"\(3, 8, 8\)"):
        evaluate(run, tmp_path / "ev8", uncond_dir=tmp_path / "gen8")
