"""The shipped weights (pretrained/): they load on a fresh clone with no data and sample finite
images in [-1, 1]; a damaged .pdparams file is a clear error naming the tensor. The CIFAR-10
folder holds the sampler alone (EBM and decoder), as its encoder would not fit the size cap."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import paddle
import pytest

import ebm_vae
from ebm_vae.training.states import CheckpointError
from tools import sample as sample_tool

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
SHIPPED = ["mnist", "fashion_mnist"]
NETWORKS = ["ebm.pdparams", "encoder.pdparams", "decoder.pdparams"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_are_there_and_small(name):
    folder = PRETRAINED / name
    assert sorted(p.name for p in folder.iterdir() if p.suffix in (".yaml", ".pdparams")) == sorted(
        ["config.yaml", *NETWORKS])
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 20 * 2 ** 20


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_and_sample_finite_images(name):
    run = ebm_vae.load_run(PRETRAINED / name)
    assert run.cfg.data.name == name and run.cfg.model.image_size == 28
    x, proposals = ebm_vae.sample(run, n=6, steps=3, seed=0, batch_size=6, proposals=True)
    assert x.shape == (6, 1, 28, 28) and np.isfinite(x).all()
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert np.isfinite(proposals).all() and np.abs(proposals).max() <= 1.0
    assert x.std() > 0.05  # not a constant image: the trained decoder draws something


def test_shipped_cifar10_is_the_sampler_alone_and_samples_colour_images():
    folder = PRETRAINED / "cifar10"
    assert sorted(p.name for p in folder.iterdir() if p.suffix in (".yaml", ".pdparams")) == [
        "config.yaml", "decoder.pdparams", "ebm.pdparams"]
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 20 * 2 ** 20
    run = ebm_vae.load_run(folder)
    assert run.cfg.data.name == "cifar10" and run.cfg.data.root is None
    assert run.missing == ("encoder",) and run.iteration > 0
    x = ebm_vae.sample(run, n=4, steps=2, seed=0, batch_size=4)
    assert x.shape == (4, 3, 32, 32) and np.isfinite(x).all()
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.05


def test_sample_tool_on_the_shipped_mnist_weights(tmp_path):
    out = tmp_path / "s.npz"
    assert sample_tool.main(["--ckpt", str(PRETRAINED / "mnist"), "--n", "4", "--steps", "2",
                             "--batch-size", "4", "--out", str(out), "--no-progress",
                             "--threads", "1"]) == 0
    images = np.load(out)["images"]
    assert images.shape == (4, 1, 28, 28) and np.isfinite(images).all()
    assert out.with_suffix(".png").is_file()


def test_sample_tool_refuses_zero_threads_in_one_line(tmp_path, capsys):
    assert sample_tool.main(["--ckpt", str(PRETRAINED / "mnist"), "--n", "4", "--threads", "0",
                             "--out", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "threads" in err and "\n" not in err
    assert not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.pop("head.weight"), "ebm.pdparams: missing head.weight"),
    (lambda s: s.update({"head.weight": paddle.zeros([3, 256, 7, 7])}),
     "ebm.pdparams: shape of head.weight is [3,256,7,7], the config expects [100,256,7,7]"),
])
def test_a_damaged_shipped_file_names_the_tensor(damage, message, tmp_path):
    copy = tmp_path / "mnist"
    shutil.copytree(PRETRAINED / "mnist", copy)
    state = paddle.load(str(copy / "ebm.pdparams"))
    damage(state)
    paddle.save(state, str(copy / "ebm.pdparams"))
    with pytest.raises(CheckpointError) as err:
        ebm_vae.load_run(copy)
    assert message in str(err.value)


def test_the_readme_own_script_snippet_runs_on_the_shipped_weights(tmp_path):
    from tests.test_faults import _readme_block, _run_snippet

    snippet = _readme_block("set_state_dict(paddle.load")
    assert '"runs/mnist"' in snippet
    res = _run_snippet(snippet.replace('"runs/mnist"', repr(str(PRETRAINED / "mnist"))), tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.split()) >= 8  # eight energies printed


def test_shipped_facade64_fills_a_picture_with_different_fills(tmp_path):
    from PIL import Image

    from tools import complete as complete_tool

    folder = PRETRAINED / "facade64"
    assert sorted(p.name for p in folder.iterdir() if p.suffix in (".yaml", ".pdparams")) == sorted(
        ["config.yaml", *NETWORKS])
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 20 * 2 ** 20
    pic = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pic).save(tmp_path / "in.png")
    hole = np.zeros((64, 64), np.uint8)
    hole[16:48, 20:52] = 255
    Image.fromarray(hole).save(tmp_path / "m.png")
    assert complete_tool.main(["fill", "--ckpt", str(folder), "--image", str(tmp_path / "in.png"),
                               "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "o.png"),
                               "--samples", "2", "--threads", "1"]) == 0
    fills = [np.asarray(Image.open(tmp_path / f"o_{k}.png")) for k in (1, 2)]
    for out in fills:
        np.testing.assert_array_equal(out[hole == 0], pic[hole == 0])  # visible pixels kept
    assert np.abs(fills[0].astype(int) - fills[1].astype(int))[hole > 0].mean() > 0.5  # in 0-255 units
