"""Data-parallel training on CPU: sharding rules, and two gloo workers started by
`python -m paddle.distributed.launch` against a single process (same global batch and chains)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from ebm_vae.core.config import config_from_dict
from ebm_vae.core.runs import checkpoint_iteration, read_checkpoint
from ebm_vae.core.train import train_generation
from ebm_vae.utils.parallel import Part, World, shard

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"


def test_shards_cover_the_rows_once_with_sizes_differing_by_at_most_one():
    assert [shard(5, World(r, 2)) for r in range(2)] == [slice(0, 3), slice(3, 5)]
    for n, size in [(7, 3), (900, 4), (4, 4)]:
        rows = [list(range(n))[shard(n, World(r, size))] for r in range(size)]
        assert sum(rows, []) == list(range(n))
        assert max(map(len, rows)) - min(map(len, rows)) <= 1


def test_part_weights_are_the_row_fractions():
    parts = [Part.of(6, 5, World(r, 2)) for r in range(2)]
    assert [(p.data_share, p.chain_share, p.local_chains) for p in parts] == [(0.5, 0.6, 3),
                                                                            (0.5, 0.4, 2)]
    with pytest.raises(ValueError, match="3 workers need at least 3"):
        Part.of(2, 5, World(0, 3))


def test_a_workers_draws_are_its_rows_of_the_draw_for_all_chains():
    paddle.seed(11)
    whole = paddle.randn([5, 4, 2]).numpy()
    paddle.seed(11)
    mine = Part.of(6, 5, World(1, 2)).randn([2, 4, 2]).numpy()
    np.testing.assert_array_equal(mine, whole[3:5])


def _state(task) -> dict[str, np.ndarray]:
    return {f"{name}.{k}": v.numpy() for name, layer in task.models._asdict().items()
            for k, v in layer.state_dict().items()}


def _run(raw, images, out, max_iters, resume=False):
    return train_generation(config_from_dict(raw), out, max_iters, resume, images=images,
                            progress=False)


def _launch(raw, images, out: Path, max_iters: int, resume: bool = False) -> list:
    """Two workers; returns their saved states (or error messages)."""
    out.mkdir(parents=True, exist_ok=True)
    (out.parent / "cfg.json").write_text(json.dumps(raw))
    np.save(out.parent / "images.npy", images)
    logs = out.parent / f"launch_{out.name}"
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
           "--log_dir", str(logs), str(WORKER), str(out.parent / "cfg.json"),
           str(out.parent / "images.npy"), str(out), str(max_iters), "resume" if resume else ""]
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # workers import ebm_vae
    env = {**os.environ, "PYTHONPATH": path}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    worker_logs = "".join(p.read_text() for p in sorted(logs.glob("workerlog.*")))
    assert res.returncode == 0, res.stdout[-2000:] + worker_logs[-4000:]
    return [(out / f"rank{r}.err").read_text() if (out / f"rank{r}.err").exists()
            else dict(np.load(out / f"rank{r}.npz")) for r in range(2)]


def _iterations(run_dir: Path) -> list[int]:
    return [int(r["iteration"]) for r in csv.DictReader(open(run_dir / "log.csv"))]


def test_two_workers_equal_one_process_and_resume_across_worker_counts(tiny_raw, tiny_images,
                                                                      tmp_path):
    # No batch norm, no dropout: nothing then depends on the worker count but summation order.
    # 14 images / batch 5 -> batches 5, 5, 4 (data rows 3+2, 2+2); 5 chains -> 3+2: unequal
    # shards. A 1-process run is cut after 2 iterations and resumed by 2 workers up to 5
    # (across an epoch boundary with learning-rate decay).
    tiny_raw["model"]["decoder"]["layers"][0]["batch_norm"] = False
    tiny_raw["model"]["encoder"]["dropout"] = 0.0
    tiny_raw["data"]["limit"] = 14
    tiny_raw["train"].update(batch_size=5, lr_decay_epochs=1.0)
    full = _state(_run(tiny_raw, tiny_images, tmp_path / "full", 5))
    _run(tiny_raw, tiny_images, tmp_path / "cut", 2)
    ranks = _launch(tiny_raw, tiny_images, tmp_path / "cut", 5, resume=True)
    for k in full:
        np.testing.assert_array_equal(ranks[0][k], ranks[1][k], err_msg=k)
        if k != "ebm.head.bias":  # see below
            np.testing.assert_allclose(ranks[0][k], full[k], rtol=1e-5, atol=1e-7, err_msg=k)
    # f and f + const are the same model: the EBM's output bias has gradient 1 - 1 = 0 (data and
    # chain means). Split into unequal shares, the zero becomes float rounding (~1e-8) that
    # Adam scales to steps of size lr, so only this unidentified offset may drift.
    assert np.abs(ranks[0]["ebm.head.bias"] - full["ebm.head.bias"]).max() < 5 * 0.001
    assert _iterations(tmp_path / "cut") == [1, 2, 3, 4, 5]
    rows = list(csv.DictReader(open(tmp_path / "cut" / "log.csv")))
    full_rows = list(csv.DictReader(open(tmp_path / "full" / "log.csv")))
    for key in ("loss_ebm", "loss_vae", "recon", "kl", "grad_norm_ebm", "grad_norm_vae",
                "l2_mean_dist"):  # not f_data, f_revised: they include the offset
        np.testing.assert_allclose([float(r[key]) for r in rows],
                                   [float(r[key]) for r in full_rows], rtol=1e-4, atol=1e-6,
                                   err_msg=key)
    assert checkpoint_iteration(tmp_path / "cut") == 5


def test_workers_with_batch_norm_and_dropout_stay_identical_and_worker_0_writes(
        tiny_raw, tiny_images, tmp_path):
    # Per-worker batch-norm statistics and dropout masks: the run differs from one process, but
    # summed gradients and averaged running statistics keep the workers' states identical.
    ranks = _launch(tiny_raw, tiny_images, tmp_path / "run", 3)
    assert any("_mean" in k for k in ranks[0])  # batch-norm running statistics are compared too
    for k in ranks[0]:
        np.testing.assert_array_equal(ranks[0][k], ranks[1][k], err_msg=k)
    saved = read_checkpoint(tmp_path / "run")
    assert saved["iteration"] == 3
    np.testing.assert_array_equal(saved["modules"]["decoder"]["net.1.norm._mean"].numpy(),
                                  ranks[0]["decoder.net.1.norm._mean"])
    assert _iterations(tmp_path / "run") == [1, 2, 3]  # one writer: no duplicated rows
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == [
        "iter_0000002.png", "iter_0000003.png"]


def test_a_nan_on_one_worker_stops_all_workers(tiny_raw, tiny_images, tmp_path):
    tiny_raw["data"]["shuffle"] = "never"
    tiny_images[10, 0, 3, 3] = np.nan  # batch 2 = images 6..11; worker 1 holds 9..11
    errors = _launch(tiny_raw, tiny_images, tmp_path / "run", 3)
    for err in errors:
        assert isinstance(err, str) and "iteration 2" in err and "f(data)" in err
    assert checkpoint_iteration(tmp_path / "run") == 1  # the state before the failed iteration
