"""Data-parallel training on CPU: the equal-shard rules, and two gloo workers started by
`python -m paddle.distributed.launch` (two launches, shared by the tests below)."""
from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
from conftest import TINY
from distributed_worker import learn_once

from ebm_vae.core.config import config_from_dict
from ebm_vae.core.models import build_models
from ebm_vae.training.checkpoints import read_checkpoint
from ebm_vae.training.generation import train_generation
from ebm_vae.training.stopping import TrainingError
from ebm_vae.utils.parallel import (World, _poison_if_non_finite, check_shards, data_parallel,
                                   mean_values, seed_worker, shard)

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"


def test_shards_are_equal_and_an_uneven_last_batch_loses_its_last_rows():
    rows = np.arange(7)
    assert [shard(rows, World(r, 3)).tolist() for r in range(3)] == [[0, 1], [2, 3], [4, 5]]
    assert shard(rows, World()).tolist() == rows.tolist()


@pytest.mark.parametrize("batch, chains, images, message", [
    (5, 6, 20, r"train.batch_size \(5\) and train.num_chains \(6\) must be multiples of 2"),
    (6, 5, 18, r"multiples of 2"),
    (6, 6, 13, r"the last batch of an epoch has 1 image"),
])
def test_unequal_shards_are_refused_in_one_line(batch, chains, images, message):
    with pytest.raises(ValueError, match=message):
        check_shards(batch, chains, images, workers=2)
    check_shards(batch, chains, images, workers=1)
    check_shards(6, 6, 15, workers=2)  # last batch of 3: cut to 2, one image left out


def test_one_process_is_left_as_it_is(tiny_raw):
    models = build_models(config_from_dict(tiny_raw).model)
    assert data_parallel(models, World()) is models
    assert mean_values({"a": 0.1}, World()) == {"a": 0.1}
    paddle.seed(5)
    seed_worker(World())
    draw = paddle.randn([3]).numpy()
    paddle.seed(5)
    np.testing.assert_array_equal(draw, paddle.randn([3]).numpy())


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_a_non_finite_output_makes_the_gradient_nan(bad):
    # what makes a NaN on one worker reach every worker through the gradient all-reduce
    w = paddle.to_tensor([1.0, 2.0], stop_gradient=False)
    out = w * paddle.to_tensor([3.0, bad])
    _poison_if_non_finite(out)
    out[:1].sum().backward()  # without the hook: a finite gradient [3, 0]
    assert np.isnan(w.grad.numpy()).all()
    w.clear_gradient()
    out = w * 3.0
    _poison_if_non_finite(out)
    out.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [3.0, 3.0])  # finite: unchanged


def test_a_workers_training_error_is_a_user_error(tiny_raw, tiny_images, tmp_path, monkeypatch):
    import ebm_vae.training.trainer as train
    monkeypatch.setattr(train, "init_world", lambda: World(0, 4))
    with pytest.raises(TrainingError, match="multiples of 4"):
        train_generation(config_from_dict(tiny_raw), tmp_path / "run", 1, images=tiny_images,
                         progress=False)


def _images() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = np.linspace(-1, 1, 8, dtype=np.float32)
    return (base[None, None, :, None] * base[None, None, None, :]
            * rng.uniform(0.5, 1, (16, 1, 1, 1))).astype(np.float32)


def _launch(jobs: list[dict], folder: Path) -> None:
    (folder / "jobs.json").write_text(json.dumps(jobs))
    logs = folder / "logs"
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
           "--log_dir", str(logs), str(WORKER), str(folder / "jobs.json")]
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # workers import ebm_vae
    res = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": path},
                         capture_output=True, text=True, timeout=300)
    worker_logs = "".join(p.read_text() for p in sorted(logs.glob("workerlog.*")))
    assert res.returncode == 0, res.stdout[-2000:] + worker_logs[-4000:]


def _ranks(folder: Path) -> list:
    """Each worker's saved state, or its error message."""
    return [(folder / f"rank{r}.err").read_text() if (folder / f"rank{r}.err").exists()
            else dict(np.load(folder / f"rank{r}.npz")) for r in range(2)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Two launches of two workers: (1) one `learn` call; an uninterrupted 4-iteration run;
    the same run stopped after 2 (--max-iters). (2) that run resumed to 4; a run with a NaN
    image on worker 1."""
    d = tmp_path_factory.mktemp("dist")
    images = _images()
    np.save(d / "images.npy", images)
    nan_images = images.copy()
    nan_images[10, 0, 3, 3] = np.nan  # shuffle 'never': batch 2 = images 6..11, worker 1: 9..11
    np.save(d / "nan.npy", nan_images)
    raw = copy.deepcopy(TINY)  # batch norm and dropout on
    # batch 6 / chains 6 -> 3 + 3 per worker; 15 images: the last batch of 3 is cut to 1 + 1;
    # 4 iterations cross the epoch boundary (and a learning-rate decay step)
    raw["train"].update(num_chains=6, lr_decay_epochs=1.0)
    raw["data"]["limit"] = 15
    plain = copy.deepcopy(raw)  # nothing but summation order differs from one process
    plain["model"]["decoder"]["layers"][0]["batch_norm"] = False
    plain["model"]["encoder"]["dropout"] = 0.0
    nan = copy.deepcopy(raw)
    nan["data"].update(shuffle="never", limit=None)

    def train(name, max_iters, resume=False, cfg=raw, data="images.npy"):
        return {"kind": "train", "config": cfg, "images": str(d / data), "run_dir": str(d / name),
                "max_iters": max_iters, "resume": resume}
    _launch([{"kind": "learn", "config": plain, "out": str(d / "learn")},
             train("full", 4), train("cut", 2)], d)
    _launch([train("cut", 4, resume=True), train("nan", 3, cfg=nan, data="nan.npy")], d)
    return {"dir": d, "plain": plain}


@pytest.mark.slow  # the `runs` fixture launches two workers twice (> ~5 s)
def test_one_data_parallel_update_is_the_single_process_update(runs):
    # Same global data, revised samples and noise eps; SGD at lr 1, so each step is -gradient:
    # the workers' averaged gradient of their shard means is the gradient of the global means.
    ranks = _ranks(runs["dir"] / "learn")
    one = learn_once(runs["plain"], World())
    for k in one:
        np.testing.assert_array_equal(ranks[0][k], ranks[1][k], err_msg=k)
        np.testing.assert_allclose(ranks[0][k], one[k], rtol=1e-5, atol=1e-7, err_msg=k)
    assert np.abs(one["step.ebm.features.0.weight"]).max() > 1e-4  # a real step was compared


def _rows(run_dir: Path) -> list[dict]:
    return [{k: float(v) for k, v in r.items() if k != "sec_per_iter"}
            for r in csv.DictReader(open(run_dir / "log.csv"))]


@pytest.mark.slow  # the `runs` fixture launches two workers twice (> ~5 s)
def test_workers_stay_identical_and_worker_0_writes(runs):
    ranks = _ranks(runs["dir"] / "full")
    assert any("_mean" in k for k in ranks[0])  # batch-norm running statistics are compared too
    proposals = [r.pop("proposals") for r in ranks]
    for k in ranks[0]:
        np.testing.assert_array_equal(ranks[0][k], ranks[1][k], err_msg=k)
    assert proposals[0].shape == (3, 1, 8, 8)  # 6 chains: 3 per worker
    assert np.abs(proposals[0] - proposals[1]).min() > 0  # each worker draws its own chains
    saved = read_checkpoint(runs["dir"] / "full")
    assert saved["iteration"] == 4
    np.testing.assert_array_equal(saved["modules"]["decoder"]["net.1.norm._mean"].numpy(),
                                  ranks[0]["decoder.net.1.norm._mean"])
    assert [r["iteration"] for r in _rows(runs["dir"] / "full")] == [1, 2, 3, 4]  # one writer
    assert sorted(p.name for p in (runs["dir"] / "full" / "samples").iterdir()) == [
        "iter_0000002.png", "iter_0000004.png"]


@pytest.mark.slow  # the `runs` fixture launches two workers twice (> ~5 s)
def test_two_workers_resumed_by_two_workers_repeat_the_uninterrupted_run(runs):
    full, cut = _ranks(runs["dir"] / "full"), _ranks(runs["dir"] / "cut")
    for r in range(2):  # parameters, buffers and each worker's last chains
        for k in full[r]:
            np.testing.assert_array_equal(cut[r][k], full[r][k], err_msg=f"rank {r}: {k}")
    assert _rows(runs["dir"] / "cut") == _rows(runs["dir"] / "full")


@pytest.mark.slow  # the `runs` fixture launches two workers twice (> ~5 s)
def test_a_nan_on_one_worker_stops_all_workers_before_the_update(runs):
    errors = _ranks(runs["dir"] / "nan")
    assert all(isinstance(e, str) and "iteration 2" in e for e in errors), errors
    assert "f(data)" in errors[1]  # the worker with the NaN image
    assert "EBM gradient norm" in errors[0]  # the NaN reached it through the gradient all-reduce
    assert read_checkpoint(runs["dir"] / "nan")["iteration"] == 1  # the state before the NaN
