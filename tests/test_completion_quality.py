"""Completion: the metrics that see blur (sharpness, FID of completions), the L2 U-Net baseline,
and exported weights filling pictures without their run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy.ndimage import gaussian_filter

from ebm_vae.completion import evaluate as completion_evaluate
from ebm_vae.completion.evaluate import L2_UNET, NEAREST, OURS, EvalRequest, evaluate, fill_file
from ebm_vae.completion.l2_unet import l2_fill, load_l2_unet, train_l2_unet
from ebm_vae.completion.masks import FillError, center_masks
from ebm_vae.completion.baselines import nearest_fill
from ebm_vae.completion.quality import completion_fid, hole_crops
from ebm_vae.eval.image_metrics import hole_gradient, sharpness_ratio
from tests.test_completion import SIZE, rand_images, tiny_completion_raw, trained_run  # noqa: F401
from tools import complete as complete_tool


def smooth_images(n: int, seed: int = 0) -> np.ndarray:
    """Images with structure at several scales (a blur removes some of it)."""
    x = rand_images(n, seed=seed)
    return np.clip(gaussian_filter(x, (0, 0, 0.7, 0.7)) * 2, -1, 1).astype(np.float32)


def test_sharpness_of_the_truth_is_one_and_of_a_blur_below():
    truth, masks = smooth_images(3), center_masks(3, SIZE, 8)
    assert sharpness_ratio(truth, truth, masks) == 1.0
    blurred = gaussian_filter(truth, (0, 0, 1.5, 1.5))
    assert sharpness_ratio(blurred, truth, masks) < 0.6
    noisy = np.clip(truth + rand_images(3, seed=1) * 0.5, -1, 1)
    assert sharpness_ratio(noisy, truth, masks) > 1.0


def test_hole_gradient_known_answer_and_only_inside_the_hole():
    x = np.zeros((1, 3, 6, 6), np.float32)
    x[:, :, :, 3:] = 1.0  # a vertical edge between columns 2 and 3: 1 in [0, 1] units
    masks = np.zeros((1, 1, 6, 6), np.float32)
    masks[0, 0, 1:5, 1:5] = 1  # stencils inside: rows 1-3, columns 1-3 (9 pixels)
    np.testing.assert_allclose(hole_gradient(x, masks), [3 * 0.5 / 9])  # 3 pixels in column 2
    y = x.copy()
    y[:, :, 0, :] = -1.0  # visible pixels around the hole do not count
    y[:, :, :, 5] = -1.0
    np.testing.assert_array_equal(hole_gradient(y, masks), hole_gradient(x, masks))
    one = np.zeros((1, 1, 6, 6), np.float32)
    one[0, 0, 2, 2] = 1
    assert np.isnan(hole_gradient(x, one)[0])
    with pytest.raises(ValueError, match="stencil"):
        sharpness_ratio(x, x, one)


def test_fid_of_completions_uses_all_holes_and_of_the_truth_is_zero():
    real = smooth_images(5)
    masks = [center_masks(5, SIZE, 6)] * 3

    def features(images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), 3, -1).mean(axis=2)

    both = completion_fid(lambda m: {"truth": real, "white": real * (1 - m) + m}, masks, real,
                          features)
    fids, holes = both["image"], both["hole"]
    assert fids["truth"]["n_completed"] == 15 and fids["truth"]["n_real"] == 5
    # the truth repeated 3 times: only the covariances' n - 1 normalisations differ (15 vs 5)
    assert abs(fids["truth"]["fid"]) < 1e-3
    assert fids["white"]["fid"] > 100 * abs(fids["truth"]["fid"])
    # the hole FID compares crops with the real crops of the same holes: exactly 0 for the truth
    assert holes["truth"]["n_completed"] == holes["truth"]["n_real"] == 15
    assert abs(holes["truth"]["fid"]) < 1e-6 and holes["white"]["fid"] > fids["white"]["fid"]


def test_hole_crops_widen_the_hole_by_a_quarter_and_stay_inside():
    x = np.arange(2 * 3 * 16 * 16, dtype=np.float32).reshape(2, 3, 16, 16)
    masks = np.zeros((2, 1, 16, 16), np.float32)
    masks[0, 0, 4:12, 6:14] = 1  # 8x8 hole: a 2-pixel margin fits on the left, not the right
    masks[1, 0, 0:8, 0:8] = 1  # in the corner: the crop shifts to keep its size
    crops = hole_crops(x, masks)
    assert crops.shape == (2, 3, 12, 12)
    np.testing.assert_array_equal(crops[0], x[0, :, 2:14, 4:16])
    np.testing.assert_array_equal(crops[1], x[1, :, 0:12, 0:12])
    masks[1, 0, 0:8, 0:9] = 1
    with pytest.raises(ValueError, match="one size"):
        hole_crops(x, masks)


def test_nearest_fill_takes_the_hole_of_the_closest_training_image():
    train = smooth_images(4, seed=3)
    images = train[[2, 0]] + 0.01  # near training images 2 and 0 in every visible pixel
    masks = center_masks(2, SIZE, 6)
    filled = nearest_fill(train, images, masks)
    hole = masks.astype(bool).repeat(3, axis=1)
    np.testing.assert_array_equal(filled[~hole], images[~hole])  # visible pixels kept
    np.testing.assert_array_equal(filled[0][hole[0]], train[2][hole[0]])
    np.testing.assert_array_equal(filled[1][hole[1]], train[0][hole[1]])


@pytest.fixture(scope="module")
def l2_run(trained_run, tmp_path_factory):  # noqa: F811
    root, _ = trained_run
    cfg_path = tmp_path_factory.mktemp("l2cfg") / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_completion_raw(str(root))))
    out = tmp_path_factory.mktemp("l2") / "l2unet"
    assert complete_tool.main(["baseline", "-c", str(cfg_path), "--iters", "3", "--out",
                               str(out), "--no-progress"]) == 0
    return cfg_path, out


def test_l2_baseline_trains_logs_and_keeps_visible_pixels(l2_run, tmp_path):
    cfg_path, out = l2_run
    cfg, net, state = load_l2_unet(out)
    assert state["iteration"] == 3 and state["seconds"] > 0
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("iteration,loss")
    images, masks = rand_images(2), center_masks(2, SIZE, 6)
    filled = l2_fill(net, images, masks)
    visible = np.broadcast_to(masks, images.shape) == 0
    np.testing.assert_array_equal(filled[visible], images[visible])
    assert not np.array_equal(filled, images)
    with pytest.raises(FillError, match="already holds"):
        train_l2_unet(cfg, out, iters=1, progress=False)
    timed = train_l2_unet(cfg, tmp_path / "timed", minutes=1e-9, images=(
        (rand_images(4) + 1) * 127.5).astype(np.uint8), progress=False)
    assert timed is not None and load_l2_unet(tmp_path / "timed")[2]["iteration"] == 1
    with pytest.raises(FillError, match="budget"):
        train_l2_unet(cfg, tmp_path / "none", progress=False)
    assert complete_tool.main(["baseline", "-c", str(cfg_path), "--out",
                               str(tmp_path / "x"), "--no-progress"]) == 2


def test_eval_rows_for_l2_sharpness_and_fid(trained_run, l2_run, tmp_path, capsys,  # noqa: F811
                                            monkeypatch):
    _, run = trained_run
    _, l2 = l2_run
    assert complete_tool.main(["eval", "--ckpt", str(run), "--out", str(tmp_path / "a"),
                               "--l2-ckpt", str(l2), "--fid-holes", "2"]) == 0
    report = json.loads((tmp_path / "a/metrics.json").read_text())
    assert L2_UNET in report["methods"] and "fid" not in report
    assert "inception" in report["fid_skipped"].lower()  # no weights in the tests' cache
    assert "FID skipped" in capsys.readouterr().out
    assert report["methods"]["mean of visible pixels"]["sharpness"] == 0.0  # a flat fill
    assert all(m["sharpness"] > 0 for n, m in report["methods"].items() if not n.startswith("mean"))
    monkeypatch.setattr(completion_evaluate, "inception_features", lambda: (
        lambda x: x.reshape(len(x), 3, -1).mean(axis=2), "test features"))
    report = evaluate(run, tmp_path / "b", EvalRequest(l2_dir=l2, fid_holes=2, nearest=True))
    fid, hole = report["fid"]["methods"], report["fid"]["hole"]
    assert NEAREST in report["methods"]
    assert set(fid) == set(hole) == set(report["methods"]) - {"ours: mean of the K revised fills"}
    assert fid[OURS]["n_completed"] == 2 * report["images"] and fid[OURS]["n_real"] == 3
    assert hole[OURS]["n_completed"] == hole[OURS]["n_real"] == 2 * report["images"]
    assert all(np.isfinite(v["fid"]) for f in (fid, hole) for v in f.values())
    assert complete_tool.main(["eval", "--ckpt", str(run), "--out", str(tmp_path / "c"),
                               "--fid-holes", "1", "--nearest"]) == 0
    out = capsys.readouterr().out
    assert "FIDhole" in out and "nearest training image" in out


def test_exported_weights_fill_without_the_run(trained_run, tmp_path, capsys):  # noqa: F811
    root, run = trained_run
    shipped = tmp_path / "facade16"
    assert complete_tool.main(["export", "--ckpt", str(run), "--out", str(shipped)]) == 0
    assert sorted(p.name for p in shipped.iterdir()) == [
        "config.yaml", "decoder.pdparams", "ebm.pdparams", "encoder.pdparams", "weights.json"]
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["root"] is not None
    assert yaml.safe_load((shipped / "config.yaml").read_text())["data"]["root"] is None  # no local path
    pic = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pic).save(tmp_path / "in.png")
    hole = np.zeros((SIZE, SIZE), np.uint8)
    hole[4:10, 5:12] = 255
    Image.fromarray(hole).save(tmp_path / "m.png")
    args = ["fill", "--ckpt", str(shipped), "--image", str(tmp_path / "in.png"), "--mask",
            str(tmp_path / "m.png"), "--out", str(tmp_path / "out.png"), "--samples", "2"]
    assert complete_tool.main(args) == 0
    for k in (1, 2):
        out = np.asarray(Image.open(tmp_path / f"out_{k}.png"))
        np.testing.assert_array_equal(out[hole == 0], pic[hole == 0])
    from_run = fill_file(run, tmp_path / "in.png", tmp_path / "m.png", tmp_path / "r.png")
    from_shipped = fill_file(shipped, tmp_path / "in.png", tmp_path / "m.png", tmp_path / "s.png")
    np.testing.assert_array_equal(from_run, from_shipped)  # the same networks, same seed
    Image.fromarray(np.zeros((SIZE + 4, SIZE, 3), np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(np.zeros((SIZE + 4, SIZE), np.uint8) + 255).save(tmp_path / "bigm.png")
    capsys.readouterr()
    assert complete_tool.main(["fill", "--ckpt", str(shipped), "--image",
                               str(tmp_path / "big.png"), "--mask", str(tmp_path / "bigm.png"),
                               "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{SIZE}x{SIZE}" in err[0]
    report = evaluate(shipped, tmp_path / "ev", EvalRequest(data_root=str(root)))
    assert report["iteration"] is not None and report["training_seconds"] is None
    assert complete_tool.main(["export", "--ckpt", str(tmp_path), "--out",
                               str(tmp_path / "none")]) == 2


def test_a_resumed_log_with_new_columns_is_widened_not_torn(tmp_path):
    from ebm_vae.training.record import RunLog, read_log
    log = RunLog(tmp_path / "log.csv", None)
    log.append({"iteration": 1, "loss": 0.5})
    log.append({"iteration": 2, "loss": 0.4})
    resumed = RunLog(tmp_path / "log.csv", keep_until=2)  # code that logs one more column
    resumed.append({"iteration": 3, "loss": 0.3, "sharpness_revised": 0.7})
    resumed.append({"iteration": 4, "sharpness_revised": 0.8})  # and one that logs fewer
    rows = read_log(tmp_path / "log.csv")
    assert [r["iteration"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["sharpness_revised"] == "nan" and rows[2]["sharpness_revised"] == "0.7"
    assert rows[3]["loss"] == "nan"
