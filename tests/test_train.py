"""The training loop end to end on tiny data: outputs, determinism, resume, NaN stop, CLI."""
from __future__ import annotations

import csv
import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
from PIL import Image

from ebm_vae.core.config import config_from_dict
from ebm_vae.training.checkpoints import checkpoint_iteration, latest_checkpoint, read_checkpoint
from ebm_vae.training.generation import train_generation
from ebm_vae.training.stopping import TrainingError
from ebm_vae.utils.provenance import code_version, read_provenance

ROOT = Path(__file__).resolve().parents[1]


def _params(task) -> dict[str, np.ndarray]:
    return {f"{k}.{n}": p.numpy() for k, m in task.models._asdict().items()
            for n, p in m.named_parameters()}


def _run(raw, images, out, max_iters, resume=False):
    return train_generation(config_from_dict(raw), out, max_iters, resume, images=images,
                            progress=False)


def test_three_iterations_write_grid_log_plot_and_checkpoint(tiny_raw, tiny_images, tmp_path):
    _run(tiny_raw, tiny_images, tmp_path, 3)
    assert (tmp_path / "config.yaml").is_file()
    grids = sorted((tmp_path / "samples").glob("*.png"))
    assert [g.name for g in grids] == ["iter_0000002.png", "iter_0000003.png"]
    assert Image.open(grids[-1]).size[0] > 2 * 8 * 8  # two panels of an 8x8 grid of 8x8 images
    assert Image.open(tmp_path / "losses.png").size[1] > 100
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    assert {"loss_ebm", "loss_vae", "lr_ebm", "lr_vae", "sec_per_iter"} <= set(rows[0])
    assert checkpoint_iteration(tmp_path) == 3
    assert sorted(p.name for p in latest_checkpoint(tmp_path).iterdir()) == [
        "decoder.pdparams", "ebm.pdparams", "encoder.pdparams", "opt_ebm.pdopt", "opt_vae.pdopt",
        "state.json"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["iter_0000003"]


def test_seeded_runs_are_identical(tiny_raw, tiny_images, tmp_path):
    a = _params(_run(tiny_raw, tiny_images, tmp_path / "a", 3))
    b = _params(_run(tiny_raw, tiny_images, tmp_path / "b", 3))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    tiny_raw["seed"] = 4
    c = _params(_run(tiny_raw, tiny_images, tmp_path / "c", 3))
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_resume_gives_the_uninterrupted_result(tiny_raw, tiny_images, tmp_path):
    # 16 images / batch 6 = 3 iterations per epoch: the interruption falls mid-epoch, the
    # run crosses an epoch boundary (new permutation, learning-rate decay).
    tiny_raw["train"]["lr_decay_epochs"] = 1.0
    full = _params(_run(tiny_raw, tiny_images, tmp_path / "full", 5))
    _run(tiny_raw, tiny_images, tmp_path / "cut", 2)
    resumed = _params(_run(tiny_raw, tiny_images, tmp_path / "cut", 5, resume=True))
    for k in full:
        np.testing.assert_allclose(resumed[k], full[k], rtol=1e-6, atol=1e-7, err_msg=k)
    rows = list(csv.DictReader(open(tmp_path / "cut" / "log.csv")))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5]
    full_rows = list(csv.DictReader(open(tmp_path / "full" / "log.csv")))
    assert [r["loss_ebm"] for r in rows] == [r["loss_ebm"] for r in full_rows]
    starts = read_provenance(tmp_path / "cut")  # one entry per start: fresh, then the resume
    assert [e["resumed_from"] for e in starts] == [None, 2]
    assert all(e["code"] == code_version() and e["paddle"] == paddle.__version__ for e in starts)


def test_corrupt_checkpoint_is_a_clear_error(tiny_raw, tiny_images, tmp_path):
    _run(tiny_raw, tiny_images, tmp_path, 1)
    (latest_checkpoint(tmp_path) / "decoder.pdparams").write_bytes(b"truncated")
    with pytest.raises(TrainingError, match="cannot resume: .*corrupt"):
        _run(tiny_raw, tiny_images, tmp_path, 2, resume=True)


def test_existing_run_is_not_overwritten(tiny_raw, tiny_images, tmp_path):
    _run(tiny_raw, tiny_images, tmp_path, 1)
    with pytest.raises(TrainingError, match="--resume"):
        _run(tiny_raw, tiny_images, tmp_path, 1)


def test_nan_stops_with_iteration_and_quantity(tiny_raw, tiny_images, tmp_path):
    tiny_raw["data"]["shuffle"] = "never"
    tiny_images[7, 0, 3, 3] = np.nan  # second batch (images 6..11)
    with pytest.raises(TrainingError, match=r"iteration 2 .*f\(data\)"):
        _run(tiny_raw, tiny_images, tmp_path, 3)
    saved = read_checkpoint(tmp_path)
    assert saved["iteration"] == 1
    assert all(np.isfinite(v.numpy()).all() for v in saved["modules"]["ebm"].values())


def test_wrong_image_shape_is_a_clear_error(tiny_raw, tmp_path):
    with pytest.raises(TrainingError, match="model expects"):
        _run(tiny_raw, np.zeros((4, 3, 8, 8), np.float32), tmp_path, 1)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.slow  # > ~5 s on a busy 2-core CPU
def test_train_tool_end_to_end_on_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in [("train", 8), ("t10k", 4)]:
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    out = tmp_path / "run"
    common = ["--set", "train.batch_size=4", "--set", "train.num_chains=3", "--set",
              "langevin.steps=1", "--no-progress"]
    res = _tool("tools/train.py", "-c", "experiments/mnist.yaml", "--data-root", str(tmp_path),
                "--out", str(out), "--max-iters", "2", *common)
    assert res.returncode == 0, res.stderr
    assert checkpoint_iteration(out) == 2 and (out / "samples" / "iter_0000002.png").is_file()
    res = _tool("tools/train.py", "--resume", str(out), "--max-iters", "3", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert checkpoint_iteration(out) == 3


@pytest.mark.parametrize("args, message", [
    (["-c", "experiments/mnist.yaml", "--set", "train.gama=1"], "train.gama"),
    (["-c", "experiments/mnist.yaml", "--data-root", "/nonexistent/mnist"], "data.root"),
    (["--resume", "/nonexistent/run"], "config.yaml"),
])
def test_train_tool_errors_are_clear(args, message, tmp_path):
    res = _tool("tools/train.py", *args, "--out", str(tmp_path / "r"))
    assert res.returncode == 2 and message in res.stderr


def test_train_tool_help():
    res = _tool("tools/train.py", "--help")
    assert res.returncode == 0 and "--max-iters" in res.stdout and "--resume" in res.stdout
