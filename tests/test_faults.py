"""Fault injection and bad input, and the checkpoint files and public API.

Each test names the fault it injects. The tools run in-process where that is enough (fast) and as
subprocesses where a signal or a kill is the point (marked slow where they take the longest).
"""
from __future__ import annotations

import copy
import csv
import errno
import gzip
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import paddle
import pytest
import yaml

from ebm_vae.training import checkpoints, runs
from ebm_vae.core.config import config_from_dict
from ebm_vae.training.checkpoints import (LEGACY_CHECKPOINT, LegacyFormatError, checkpoint_iteration,
                                      latest_checkpoint, read_checkpoint)
from ebm_vae.training.legacy import read_pickle
from ebm_vae.training.record import read_log
from ebm_vae.training.states import CheckpointError, NonFiniteWeights
from ebm_vae.training.generation import train_generation
from ebm_vae.training.stopping import TrainingError
from ebm_vae.errors import Stopped, UserError
from ebm_vae.utils.atomic import WriteError
from ebm_vae.utils.cli import run_tool
from ebm_vae.utils.runtime import configure_cpu
from ebm_vae.utils.runlock import LOCK_FILE
from tests.conftest import (TINY, assert_same_states, checkpoint_states, log_rows, old_modules,
                            signal_training, write_old_checkpoint)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import convert_run as convert_tool  # noqa: E402
import evaluate as evaluate_tool  # noqa: E402
import reproduce as reproduce_tool  # noqa: E402
import sample as sample_tool  # noqa: E402
import train as train_tool  # noqa: E402

# A 28x28 version of the tiny nets, so the tools can train on (tiny) MNIST IDX files.
TINY28 = copy.deepcopy(TINY)
TINY28["model"].update(image_size=28, decoder={"act": "relu", "layers": [
    {"channels": 4, "kernel": 7, "stride": 1, "padding": 0, "batch_norm": True},
    {"channels": 4, "kernel": 4, "stride": 2, "padding": 1, "batch_norm": True},
    {"channels": 1, "kernel": 4, "stride": 2, "padding": 1}]})
TINY28["train"].update(batch_size=4, num_chains=3, epochs=2, sample_every=100, checkpoint_every=2)
TINY28["langevin"]["steps"] = 1


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory) -> Path:
    """Tiny MNIST IDX files: 16 training images, 4 test images."""
    root = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in [("train", 16), ("t10k", 4)]:
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    return root


def _config_file(tmp_path: Path, langevin_steps: int = 1, **train) -> Path:
    raw = copy.deepcopy(TINY28)
    raw["train"].update(train)
    raw["langevin"]["steps"] = langevin_steps
    path = tmp_path / "tiny28.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _train(*args: str) -> int:
    return train_tool.main([*args, "--threads", "1", "--no-progress"])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    return errors[0]


def _run(raw, images, out, max_iters, resume=False):
    configure_cpu(threads=1)  # the math threads training keeps
    return train_generation(config_from_dict(raw), out, max_iters, resume, images=images,
                            progress=False)


# ------------------------------------------------------------------------------------------
# Part A: Paddle's files, the converter, exact loading, the public API

def test_old_format_run_is_refused_then_converts_and_resumes(tiny_raw, tiny_images, tmp_path,
                                                             capsys):
    """A run of the old format (checkpoints/last.ckpt, a pickle of numpy state dicts): every
    tool but the converter refuses it in one line naming the converter; converted, it loads the
    same tensors and resumes to the uninterrupted result."""
    full = tmp_path / "full"
    _run(tiny_raw, tiny_images, full, 4)
    old = tmp_path / "old"
    task = _run(tiny_raw, tiny_images, old, 2)
    for folder in (old / "checkpoints").iterdir():  # rewrite it in the old format
        checkpoints._remove_tree(folder)
    write_old_checkpoint(old / LEGACY_CHECKPOINT, {"iteration": 2,
                                                   "modules": old_modules(task.modules())})
    hint = f"python tools/convert_run.py {old / LEGACY_CHECKPOINT}"
    for load in (latest_checkpoint, runs.load_run, read_checkpoint):
        with pytest.raises(LegacyFormatError, match="convert_run.py"):
            load(old)
    assert sample_tool.main(["--ckpt", str(old), "--n", "2", "--no-progress"]) == 2
    assert hint in _error_line(capsys)
    with pytest.raises(LegacyFormatError, match="convert_run.py"):
        _run(tiny_raw, tiny_images, old, 4, resume=True)
    # the converter
    assert convert_tool.main([str(old)]) == 0
    assert "wrote" in capsys.readouterr().err
    folder = latest_checkpoint(old)
    assert folder.name == "iter_0000002" and (old / LEGACY_CHECKPOINT).is_file()
    assert sorted(p.name for p in folder.iterdir()) == [
        "decoder.pdparams", "ebm.pdparams", "encoder.pdparams", "opt_ebm.pdopt", "opt_vae.pdopt",
        "state.json"]
    legacy = read_pickle(old / LEGACY_CHECKPOINT)["modules"]
    new = read_checkpoint(folder)["modules"]
    for m in legacy:
        for k, v in legacy[m].items():
            if hasattr(v, "shape"):
                np.testing.assert_array_equal(new[m][k].numpy(), v, err_msg=f"{m}/{k}")
    assert convert_tool.main([str(old / LEGACY_CHECKPOINT)]) == 2  # nothing left: one line
    assert "nothing to convert" in _error_line(capsys)
    assert runs.load_run(old).iteration == 2  # the old file beside the folder is ignored
    # the converted run resumes to the uninterrupted result
    _run(tiny_raw, tiny_images, old, 4, resume=True)
    assert_same_states(old, full)


def test_sample_tool_on_a_folder_with_only_config_and_pdparams(tiny_raw, tiny_images, tmp_path,
                                                               capsys):
    run = tmp_path / "run"
    _run(tiny_raw, tiny_images, run, 2)
    shipped = tmp_path / "pretrained" / "tiny"
    assert convert_tool.main([str(run), "--weights-only", str(shipped)]) == 0
    assert sorted(p.name for p in shipped.iterdir()) == [
        "config.yaml", "decoder.pdparams", "ebm.pdparams", "encoder.pdparams", "weights.json"]
    out = tmp_path / "s.npz"
    assert sample_tool.main(["--ckpt", str(shipped), "--n", "7", "--out", str(out),
                             "--no-progress"]) == 0
    assert "iteration 2)" in capsys.readouterr().err
    (shipped / "weights.json").unlink()  # weights without a record of their age still load
    assert sample_tool.main(["--ckpt", str(shipped), "--n", "7", "--out", str(out),
                             "--no-progress"]) == 0
    assert "unknown iteration" in capsys.readouterr().err
    images = np.load(out)["images"]
    assert images.shape == (7, 1, 8, 8) and np.abs(images).max() <= 1
    assert sample_tool.main(["--ckpt", str(shipped), "--batch-size", "0"]) == 2
    assert "--batch-size" in _error_line(capsys)
    # the weights are the checkpoint's
    got = runs.load_run(shipped).models.decoder.state_dict()
    want = read_checkpoint(run)["modules"]["decoder"]
    assert all(np.array_equal(got[k].numpy(), want[k].numpy()) for k in want)


def test_loading_is_exact_and_names_the_tensors(tiny_raw, tiny_images, tmp_path, capsys):
    run = tmp_path / "run"
    _run(tiny_raw, tiny_images, run, 1)
    shipped = tmp_path / "w"
    runs.export_weights(run, shipped)
    state = paddle.load(str(shipped / "decoder.pdparams"))
    del state["net.3.weight"]
    state["net.0.weight"] = paddle.zeros([9, 4, 4, 4])
    state["net.9.bias"] = paddle.zeros([1])
    paddle.save(state, str(shipped / "decoder.pdparams"))
    with pytest.raises(CheckpointError) as err:
        runs.load_run(shipped)
    msg = str(err.value)
    assert "decoder.pdparams: missing net.3.weight; unexpected net.9.bias; shape of net.0.weight " \
           "is [9,4,4,4], the config expects [4,4,4,4]" in msg
    assert sample_tool.main(["--ckpt", str(shipped), "--n", "2"]) == 2
    assert "net.3.weight" in _error_line(capsys)
    # a checkpoint folder: an optimiser state that does not fit is named too
    folder = latest_checkpoint(run)
    opt = paddle.load(str(folder / "opt_vae.pdopt"))
    key = next(k for k in opt if k.endswith("_moment1_0"))
    opt[key] = paddle.zeros([3, 3, 3])
    paddle.save(opt, str(folder / "opt_vae.pdopt"))
    with pytest.raises(TrainingError, match=rf"opt_vae.pdopt: shape of {re.escape(key)} is \[3,3,3\]"):
        _run(tiny_raw, tiny_images, run, 2, resume=True)


README_BLOCKS = re.compile(r"```python\n(.*?)```", re.S)


def _readme_block(marker: str) -> str:
    text = (ROOT / "docs" / "evaluation.md").read_text()  # the snippets the README links to
    blocks = [b for b in README_BLOCKS.findall(text) if marker in b]
    assert len(blocks) == 1, marker
    return blocks[0]


def _run_snippet(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EBM_VAE_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_readme_snippets_run_as_written(tiny_raw, tiny_images, tmp_path):
    """The `paddle.load` + `set_state_dict` snippet and the public-API snippet of docs/evaluation.md, executed
    exactly as written, in a folder holding `runs/mnist` (a tiny trained run)."""
    _run(tiny_raw, tiny_images, tmp_path / "runs" / "mnist", 2)
    snippet = _readme_block("set_state_dict(paddle.load")
    res = _run_snippet(snippet, tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.split()) >= 8  # eight energies printed
    api = _readme_block("ebm_vae.sample(")
    res = _run_snippet(api + "\nassert x.shape == (64, 1, 8, 8) and x.dtype.name == 'float32'"
                       "\nassert -1 <= x.min() and x.max() <= 1 and run.iteration == 2\n", tmp_path)
    assert res.returncode == 0, res.stderr


def test_public_api_loads_and_samples(tiny_raw, tiny_images, tmp_path):
    import ebm_vae
    _run(tiny_raw, tiny_images, tmp_path / "run", 2)
    run = ebm_vae.load_run(tmp_path / "run")
    a = ebm_vae.sample(run, n=5, steps=2, seed=1)
    b, proposals = ebm_vae.sample(run, n=5, steps=2, seed=1, proposals=True)
    assert a.shape == (5, 1, 8, 8) and proposals.shape == (5, 1, 8, 8)
    np.testing.assert_array_equal(a, b)
    assert run.iteration == 2 and not run.models.decoder.training
    with pytest.raises(UserError):
        ebm_vae.sample(run, n=0)


def test_importing_ebm_vae_has_no_side_effects(tmp_path):
    code = ("import sys, os\n"
            "import ebm_vae\n"
            "assert 'paddle' not in sys.modules, 'import ebm_vae imported paddle'\n"
            "import paddle\n"
            "device = paddle.get_device()\n"
            "import ebm_vae.api, ebm_vae.training.trainer, ebm_vae.training.runs, ebm_vae.utils.runtime\n"
            "assert paddle.get_device() == device, paddle.get_device()\n"
            "assert 'MKL_DEBUG_CPU_TYPE' not in os.environ\n"
            "assert callable(ebm_vae.load_run) and callable(ebm_vae.sample)\n")
    env = {k: v for k, v in os.environ.items() if k != "MKL_DEBUG_CPU_TYPE"}
    env.update(PYTHONPATH=str(ROOT), HOME=str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    res = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert list(work.iterdir()) == []  # nothing written


# ------------------------------------------------------------------------------------------
# Part B: faults and bad input

@pytest.mark.parametrize("key, value", [("model.decoder.layers.1.batch_norm", "false"),
                                        ("model.latent_dim", "100")])
def test_resume_refuses_a_set_that_changes_the_networks(key, value, mnist_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train("-c", str(_config_file(tmp_path)), "--data-root", str(mnist_root),
                  "--out", str(out), "--max-iters", "2") == 0
    config = (out / "config.yaml").read_bytes()
    ckpt = sorted(p.name for p in latest_checkpoint(out).iterdir())
    capsys.readouterr()
    assert _train("--resume", str(out), "--set", f"{key}={value}", "--set", "train.gamma=1",
                  "--max-iters", "3") == 2
    line = _error_line(capsys)
    assert f"--set {key}={value}" in line and "train.gamma" not in line and "decoder." in line
    assert (out / "config.yaml").read_bytes() == config  # nothing was written
    assert sorted(p.name for p in latest_checkpoint(out).iterdir()) == ckpt
    assert checkpoint_iteration(out) == 2
    capsys.readouterr()
    assert _train("--resume", str(out), "--max-iters", "3") == 0  # a plain resume still works
    assert checkpoint_iteration(out) == 3
    assert "resuming from iteration 2" in capsys.readouterr().err  # the user sees where it went on


def test_library_resume_with_other_networks_fails_before_writing(tiny_raw, tiny_images, tmp_path):
    _run(tiny_raw, tiny_images, tmp_path, 2)
    config = (tmp_path / "config.yaml").read_bytes()
    tiny_raw["model"]["decoder"]["layers"][0]["batch_norm"] = False
    with pytest.raises(TrainingError, match=r"cannot resume: .*iter_0000002 does not fit the networks of the config: decoder.pdparams: missing "
                       r"net.2.bias, net.2.weight; unexpected net.1.beta"):
        _run(tiny_raw, tiny_images, tmp_path, 3, resume=True)
    assert (tmp_path / "config.yaml").read_bytes() == config


@pytest.mark.parametrize("torn", ["3,0,0.1", "3,0,0.1,0.2\n", "", "iteration,ep"])
def test_a_torn_log_row_is_dropped_on_resume(torn, tiny_raw, tiny_images, tmp_path, capsys):
    full = tmp_path / "full"
    _run(tiny_raw, tiny_images, full, 4)
    cut = tmp_path / "cut"
    _run(tiny_raw, tiny_images, cut, 2)
    log = cut / "log.csv"
    if torn.startswith("iteration"):
        log.write_text(torn)  # a torn header: the whole log was being written
    else:
        with open(log, "a") as fh:
            fh.write(torn)
    capsys.readouterr()
    _run(tiny_raw, tiny_images, cut, 4, resume=True)
    if torn:
        assert "warning:" in capsys.readouterr().err
    rows = read_log(log)
    first = 3 if torn.startswith("iteration") else 1
    assert [int(r["iteration"]) for r in rows] == list(range(first, 5))
    assert_same_states(cut, full)


def test_appended_rows_are_flushed_and_synced_before_a_checkpoint(tiny_raw, tiny_images, tmp_path,
                                                                  monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self") else fd)
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    _run(tiny_raw, tiny_images, tmp_path, 2)
    logs = [i for i, p in enumerate(synced) if str(p).endswith("log.csv")]
    states = [i for i, p in enumerate(synced) if ".state.json." in str(p)]
    assert logs and states and logs[-1] < states[-1]


def _nan_in_vae_loss_at(monkeypatch, call: int) -> None:
    """The VAE loss of the `call`-th iteration (1-based) becomes NaN (after the EBM's gradient,
    before either update)."""
    import ebm_vae.core.teach as teach
    real, count = teach.vae_loss, [0]

    def vae_loss(*args, **kwargs):
        count[0] += 1
        loss, recon, kl = real(*args, **kwargs)
        return (loss * float("nan") if count[0] == call else loss), recon, kl

    monkeypatch.setattr(teach, "vae_loss", vae_loss)


def test_nonfinite_vae_stop_saves_both_networks_and_optimisers_before_the_iteration(
        tiny_raw, tiny_images, tmp_path, monkeypatch):
    for n in (2, 4):
        _run(tiny_raw, tiny_images, tmp_path / f"ref{n}", n)
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _nan_in_vae_loss_at(m, 3)
        with pytest.raises(TrainingError) as err:
            _run(tiny_raw, tiny_images, run, 4)
    msg = str(err.value)
    assert msg.startswith("iteration 3 (epoch 0): non-finite VAE loss")
    assert "No network was updated in this iteration" in msg
    named = re.search(r"checkpoint (\S+);", msg).group(1)
    assert Path(named) == latest_checkpoint(run) and Path(named).name == "iter_0000002"
    meta = json.loads((Path(named) / "state.json").read_text())
    assert meta["iteration"] == 2 and "VAE loss" in meta["stopped"]
    assert_same_states(run, tmp_path / "ref2")  # EBM, encoder, decoder and both Adam states
    _run(tiny_raw, tiny_images, run, 4, resume=True)  # plain --resume continues
    assert_same_states(run, tmp_path / "ref4")


def test_nonfinite_stop_in_the_first_iteration_saves_the_initialisation(tiny_raw, tiny_images,
                                                                       tmp_path):
    tiny_raw["data"]["shuffle"] = "never"
    tiny_images[0, 0, 0, 0] = np.inf
    with pytest.raises(TrainingError, match=r"iteration 1 .*No network was updated"):
        _run(tiny_raw, tiny_images, tmp_path, 2)
    assert checkpoint_iteration(tmp_path) == 0
    assert read_checkpoint(tmp_path)["modules"]["opt_ebm"] == {}


def _failing_write_bytes(monkeypatch, fail_on: int) -> list:
    """`fail_on`-th checkpoint file write (1-based) writes half its bytes, then ENOSPC."""
    real, calls = checkpoints.write_bytes, []

    def write_bytes(path, data):
        calls.append(path)
        if len(calls) == fail_on:
            with open(path, "wb") as fh:
                fh.write(data[:len(data) // 2])
            raise checkpoints.WriteError(f"cannot write {path}: "
                                  f"{os.strerror(errno.ENOSPC)}") from OSError(errno.ENOSPC, "full")
        return real(path, data)

    monkeypatch.setattr(checkpoints, "write_bytes", write_bytes)
    return calls


def test_a_full_disk_keeps_the_last_checkpoint_and_leaves_no_temporary(tiny_raw, tiny_images,
                                                                      tmp_path, monkeypatch):
    _run(tiny_raw, tiny_images, tmp_path, 2)  # checkpoint at 2
    before = checkpoint_states(tmp_path)
    _failing_write_bytes(monkeypatch, fail_on=3)  # the 3rd file of the next checkpoint
    with pytest.raises(WriteError, match="No space left") as err:
        _run(tiny_raw, tiny_images, tmp_path, 4, resume=True)
    assert "\n" not in str(err.value)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["iter_0000002"]
    after = checkpoint_states(tmp_path)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_a_full_disk_in_the_tool_is_one_line(mnist_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    import ebm_vae.utils.atomic as atomic
    real_fsync = atomic.os.fsync

    def fsync(fd):  # the disk fills up at the first checkpoint
        if "pdparams" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    assert _train("-c", str(_config_file(tmp_path)), "--data-root", str(mnist_root),
                  "--out", str(out), "--max-iters", "3") == 2
    line = _error_line(capsys)
    assert "No space left on device" in line and "previous checkpoint is unchanged" in line
    assert list((out / "checkpoints").iterdir()) == []


def test_tool_user_errors_are_one_line(mnist_root, tmp_path, capsys):
    cfg = str(_config_file(tmp_path))
    base = ["-c", cfg, "--data-root", str(mnist_root)]
    cases = [
        (["--set", "train.gamma=[1", "--out", str(tmp_path / "a")], "not valid YAML"),
        (["--set", "model.decoder.layers.7.channels=3", "--out", str(tmp_path / "a")],
         "model.decoder.layers.7"),
        (["--threads", "0", "--out", str(tmp_path / "a")], "--threads"),
    ]
    for args, message in cases:
        assert train_tool.main([*base, *args, "--no-progress"]) == 2, args
        assert message in _error_line(capsys)
    if not (paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0):
        assert _train(*base, "--device", "gpu", "--out", str(tmp_path / "g")) == 2
        assert "no usable GPU" in _error_line(capsys)
    # --resume A --out B
    a = tmp_path / "A"
    assert _train(*base, "--out", str(a), "--max-iters", "1") == 0
    capsys.readouterr()
    assert _train("--resume", str(a), "--out", str(tmp_path / "B"), "--max-iters", "2") == 2
    assert "--out names another one" in _error_line(capsys)
    assert not (tmp_path / "B").exists() and checkpoint_iteration(a) == 1
    assert _train("--resume", str(a), "--out", str(a), "--max-iters", "2") == 0  # same folder
    capsys.readouterr()
    # a folder with a log but no checkpoint (killed before its first checkpoint) is not overwritten
    checkpoints._remove_tree(latest_checkpoint(a))
    log = (a / "log.csv").read_bytes()
    assert _train(*base, "--out", str(a), "--max-iters", "1") == 2
    assert "already holds a run (log.csv" in _error_line(capsys)
    assert (a / "log.csv").read_bytes() == log
    assert _train("--resume", str(a), "--max-iters", "1") == 0  # resumes from iteration 0
    assert "starting again from iteration 0" in capsys.readouterr().err
    assert [int(r["iteration"]) for r in read_log(a / "log.csv")] == [1]


def test_tools_share_one_handler_for_their_errors_and_ctrl_c(capsys):
    def raising(err: BaseException):
        def body():
            raise err
        return body
    stopped = Stopped("SIGTERM: stopped after iteration 3")
    stopped.exit_code = 143
    for err, code, line in [(UserError("bad value"), 2, "error: bad value"),
                            (stopped, 143, "interrupted: SIGTERM: stopped after iteration 3"),
                            (KeyboardInterrupt(), 130, "interrupted (Ctrl-C)")]:
        assert run_tool(raising(err)) == code
        assert capsys.readouterr().err.splitlines() == [line]
    assert run_tool(lambda: None) == 0 and run_tool(lambda: 3) == 3
    with pytest.raises(ValueError):  # a bug keeps its traceback
        run_tool(raising(ValueError("bug")))


def test_ctrl_c_in_evaluate_and_reproduce_is_one_line(tmp_path, monkeypatch, capsys):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(evaluate_tool, "open_run", ctrl_c)
    monkeypatch.setattr(reproduce_tool, "find_tables", ctrl_c)
    for tool, argv in [(evaluate_tool, ["--ckpt", str(tmp_path)]),
                       (reproduce_tool, ["--table", "6", "--scale", "quick"])]:
        assert tool.main(argv) == 130
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("interrupted"), err


@pytest.mark.parametrize("args", [["--out", "s.txt"], ["--out", "s"],
                                  ["--interpolate", "--out", "i.npz"]])
def test_sample_tool_refuses_an_out_file_of_another_format(args, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sample_tool.main(["--ckpt", str(tmp_path), *args]) == 2
    line = _error_line(capsys)
    assert f"--out {args[-1]}" in line and (".png" if "--interpolate" in args else ".npz") in line
    assert not list(tmp_path.iterdir())  # nothing was written


def test_a_start_that_fails_on_missing_data_leaves_no_folder_behind(tmp_path, capsys):
    cfg = str(_config_file(tmp_path))
    run, kept = tmp_path / "new_run", tmp_path / "existing"
    kept.mkdir()
    for out in (run, kept):
        assert _train("-c", cfg, "--data-root", str(tmp_path / "nowhere"), "--out", str(out),
                      "--max-iters", "1") == 2
        assert "nowhere" in _error_line(capsys)
    assert not run.exists()  # the folder this start created is gone again
    assert kept.is_dir() and not list(kept.iterdir())  # a folder the user made stays (empty)


_HOLD = ("import sys, time\nfrom ebm_vae.utils.runlock import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(300)\n")


def test_a_run_folder_in_use_is_refused_and_a_killed_holder_leaves_no_stuck_lock(mnist_root,
                                                                                  tmp_path, capsys):
    cfg = str(_config_file(tmp_path))
    run = tmp_path / "run"
    fresh = ["-c", cfg, "--data-root", str(mnist_root), "--out", str(run)]
    assert _train(*fresh, "--max-iters", "1") == 0
    log = (run / "log.csv").read_bytes()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        for args in (["--resume", str(run)], fresh):
            assert _train(*args, "--max-iters", "2") == 2
            line = _error_line(capsys)
            assert f"{run} is in use by process {holder.pid} (started " in line, line
            assert (run / "log.csv").read_bytes() == log and checkpoint_iteration(run) == 1
    finally:
        holder.kill()  # SIGKILL: the OS drops its lock, the lock file stays
        holder.wait()
    assert (run / LOCK_FILE).is_file()
    assert _train("--resume", str(run), "--max-iters", "2") == 0
    assert [int(r["iteration"]) for r in read_log(run / "log.csv")] == [1, 2]
    assert (run / LOCK_FILE).read_text().split()[0] == str(os.getpid())  # the last holder


# ------------------------------------------------------------------------------------------
# Signals and kills, on the real tool (subprocesses)

def _spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EBM_VAE_THREADS": "1"}
    return subprocess.Popen([sys.executable, "tools/train.py", *args, "--no-progress"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


TOTAL = 24


@pytest.fixture(scope="module")
def soak(mnist_root, tmp_path_factory):
    """A config of TOTAL = 24 iterations (4 per epoch, 6 epochs, a checkpoint every 3) and the
    final states of its uninterrupted run."""
    folder = tmp_path_factory.mktemp("soak")
    cfg = _config_file(folder, langevin_steps=8, epochs=TOTAL // 4, num_chains=16,
                       checkpoint_every=3, sample_every=5)
    ref = folder / "ref"
    proc = _spawn("-c", str(cfg), "--data-root", str(mnist_root), "--out", str(ref))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert checkpoint_iteration(ref) == TOTAL
    return cfg, ref


@pytest.mark.slow
def test_sigint_and_sigterm_save_and_resume_exactly(soak, mnist_root, tmp_path):
    cfg, ref = soak
    run = tmp_path / "run"
    start = ["-c", str(cfg), "--data-root", str(mnist_root), "--out", str(run)]
    for sig, code, args in [(signal.SIGINT, 130, start), (signal.SIGTERM, 143, ["--resume", str(run)])]:
        returncode, err, _ = signal_training(["tools/train.py", *args], run, sig)
        assert returncode == code, err
        line = [x for x in err.splitlines() if x.startswith("interrupted:")]
        assert len(line) == 1 and "Traceback" not in err, err
        it = checkpoint_iteration(run)
        assert f"{sig.name}: stopped after iteration {it}" in line[0]
        assert f"--resume {run}" in line[0] and str(latest_checkpoint(run)) in line[0]
        assert [int(r["iteration"]) for r in read_log(run / "log.csv")] == list(range(1, it + 1))
        assert 0 < it < TOTAL
    proc = _spawn("--resume", str(run))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert_same_states(run, ref)
    rows = read_log(run / "log.csv")
    ref_rows = read_log(ref / "log.csv")
    assert [r["loss_vae"] for r in rows] == [r["loss_vae"] for r in ref_rows]


def _newer(path: Path, mark: float) -> bool:
    try:
        return path.stat().st_mtime > mark
    except OSError:
        return False


@pytest.mark.slow
def test_kill_soak_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_run(
        soak, mnist_root, tmp_path):
    cfg, ref = soak
    run = tmp_path / "run"
    rng = np.random.default_rng(12)
    kills, history = 0, []
    for attempt in range(12):
        fresh = not (run / "config.yaml").is_file()
        args = (["-c", str(cfg), "--data-root", str(mnist_root), "--out", str(run)] if fresh
                else ["--resume", str(run)])
        proc = _spawn(*args)
        if kills < 5:
            # kill at a random moment: once the log reaches a random row (or, for the first kill,
            # once the run folder is being written), plus a random part of an iteration
            mark = time.time()
            low = checkpoint_iteration(run) or 0 if run.exists() else 0
            target = 0 if kills == 0 else min(low + int(rng.integers(1, 6)), TOTAL - 4)

            def reached() -> bool:
                if not _newer(run / "config.yaml", mark):
                    return False
                return target == 0 or (_newer(run / "log.csv", mark) and log_rows(run) >= target)

            while proc.poll() is None and time.time() - mark < 120 and not reached():
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.05))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                history.append((target, log_rows(run)))
        _, err = proc.communicate(timeout=300)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err
    print("kills (target row, rows at the kill):", history)
    assert kills >= 4 and proc.returncode == 0
    assert_same_states(run, ref)
    assert [int(r["iteration"]) for r in read_log(run / "log.csv")] == list(range(1, TOTAL + 1))
    assert not list((run / "checkpoints").glob(".*"))  # no temporary folder left


def test_a_full_disk_during_a_log_append_then_resume(tiny_raw, tiny_images, tmp_path, monkeypatch):
    import ebm_vae.training.record as record_mod
    _run(tiny_raw, tiny_images, tmp_path / "full", 4)
    run = tmp_path / "run"
    real, calls = csv.DictWriter, [0]

    class FullDisk(real):
        def writerow(self, row):
            calls[0] += 1
            if calls[0] == 4:  # header, rows 1, 2, then row 3: half of it reaches the disk
                self.writer.writerow(list(row.values())[:3])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().writerow(row)

    with monkeypatch.context() as m:
        m.setattr(record_mod.csv, "DictWriter", FullDisk)
        with pytest.raises(WriteError, match="log.csv: No space left on device"):
            _run(tiny_raw, tiny_images, run, 4)
    assert checkpoint_iteration(run) == 2
    _run(tiny_raw, tiny_images, run, 4, resume=True)
    assert [int(r["iteration"]) for r in read_log(run / "log.csv")] == [1, 2, 3, 4]
    assert_same_states(run, tmp_path / "full")


def _signal_twice_in(monkeypatch, name: str, at_call: int) -> None:
    """Send SIGINT twice inside core.teach.<name> (`revise`: steps 1-3, `learn`: steps 4-5) of
    iteration `at_call`."""
    import ebm_vae.core.teach as teach
    real, calls = getattr(teach, name), [0]

    def patched(*args, **kwargs):
        calls[0] += 1
        out = real(*args, **kwargs)
        if calls[0] == at_call:
            os.kill(os.getpid(), signal.SIGINT)  # finish the iteration, then stop...
            os.kill(os.getpid(), signal.SIGINT)  # ...no: stop now
            time.sleep(0.1)
        return out

    monkeypatch.setattr(teach, name, patched)


def test_a_second_signal_abandons_the_revision_and_saves_the_state_before_it(
        tiny_raw, tiny_images, tmp_path, monkeypatch):
    """SIGINT twice while iteration 3 revises its chains (steps 1-3, no update yet): the
    checkpoint is the state after iteration 2, exactly (batch-norm statistics included)."""
    from ebm_vae.training.stopping import Interrupted
    _run(tiny_raw, tiny_images, tmp_path / "ref2", 2)
    _signal_twice_in(monkeypatch, "revise", 3)
    tiny_raw["train"]["checkpoint_every"] = 100
    run = tmp_path / "run"
    with pytest.raises(Interrupted) as err:
        _run(tiny_raw, tiny_images, run, 6)
    assert err.value.exit_code == 130
    assert "SIGINT: stopped after iteration 2" in str(err.value)
    assert checkpoint_iteration(run) == 2
    assert_same_states(run, tmp_path / "ref2")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_signals_during_the_updates_let_the_iteration_finish(tiny_raw, tiny_images, tmp_path,
                                                             monkeypatch):
    """SIGINT twice while iteration 3 updates the networks (steps 4-5): the updates are never cut
    in half; the iteration ends, its state is saved and the run stops."""
    from ebm_vae.training.stopping import Interrupted
    _run(tiny_raw, tiny_images, tmp_path / "ref3", 3)
    _signal_twice_in(monkeypatch, "learn", 3)
    tiny_raw["train"]["checkpoint_every"] = 100
    run = tmp_path / "run"
    with pytest.raises(Interrupted, match="SIGINT: stopped after iteration 3"):
        _run(tiny_raw, tiny_images, run, 6)
    assert checkpoint_iteration(run) == 3
    assert_same_states(run, tmp_path / "ref3")


# ------------------------------------------------------------------------------------------
# Live runs, numbers that are not finite, duplicate keys, signals on every tool, memory

def _tiny_run_folder(tiny_raw, tmp_path: Path) -> tuple[Path, dict]:
    """A run folder with config.yaml (no checkpoint yet) and the networks it describes."""
    run = tmp_path / "live"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(tiny_raw))
    models = runs.build_models(config_from_dict(tiny_raw).model)
    return run, dict(models._asdict())


def test_a_reader_chooses_again_when_the_trainer_removes_its_checkpoint(tiny_raw, tmp_path,
                                                                        monkeypatch):
    """The checkpoint a reader chose is replaced (next one written, it removed) between the
    choice and the read: the reader takes the newest again."""
    run, nets = _tiny_run_folder(tiny_raw, tmp_path)
    checkpoints.write_checkpoint(run, 1, nets)
    real, writes = checkpoints.read_folder, [1]

    def writer_in_between(folder, names=()):
        if writes[0] < 4:  # three times: the trainer moves on just after the reader chose
            writes[0] += 1
            checkpoints.write_checkpoint(run, writes[0], nets)
        return real(folder, names)

    monkeypatch.setattr(checkpoints, "read_folder", writer_in_between)
    assert runs.load_run(run).iteration == 4
    assert read_checkpoint(run)["iteration"] == 4
    with pytest.raises(CheckpointError, match="state.json not found"):  # named: no retry
        runs.load_run(run / "checkpoints" / "iter_0000001")


def test_sampling_a_run_while_it_writes_a_checkpoint_every_moment(tiny_raw, tmp_path, capsys):
    """A writer thread writes a checkpoint every few milliseconds (each removes the one before); the
    sample tool and the readers of the library read the run all along without an error."""
    import threading
    run, nets = _tiny_run_folder(tiny_raw, tmp_path)
    checkpoints.write_checkpoint(run, 1, nets)
    done, errors = threading.Event(), []

    def writer():
        it = 1
        while not done.wait(0.005):  # a trainer writes a checkpoint every few milliseconds
            it += 1
            try:
                checkpoints.write_checkpoint(run, it, nets)
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(err)
                return

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for i in range(4):
            assert sample_tool.main(["--ckpt", str(run), "--n", "2", "--steps", "1", "--threads",
                                     "1", "--no-progress", "--out", str(tmp_path / f"{i}.npz")]) == 0
            runs.export_weights(run, tmp_path / "export")
        for _ in range(60):
            assert read_checkpoint(run)["iteration"] >= 1 and runs.load_run(run).iteration >= 1
    finally:
        done.set()
        thread.join()
    assert not errors and "error" not in capsys.readouterr().err
    assert len(checkpoints.checkpoint_dirs(run)) == 1


@pytest.mark.parametrize("override", ["train.lr_ebm=1e400", "train.lr_ebm=-.inf",
                                      "langevin.step_size=.nan", "train.gamma=1.0e+999"])
def test_numbers_that_are_not_finite_are_refused_naming_the_key(override, mnist_root, tmp_path,
                                                                capsys):
    out = tmp_path / "run"
    assert _train("-c", str(_config_file(tmp_path)), "--data-root", str(mnist_root), "--set",
                  override, "--out", str(out)) == 2
    line = _error_line(capsys)
    assert f"config key '{override.split('=')[0]}': must be a finite number" in line, line
    assert not out.exists()
    raw = yaml.safe_load(_config_file(tmp_path).read_text())
    text = _config_file(tmp_path).read_text().replace(f"lr_ebm: {raw['train']['lr_ebm']}",
                                                      "lr_ebm: .inf")
    (tmp_path / "inf.yaml").write_text(text)
    assert _train("-c", str(tmp_path / "inf.yaml"), "--out", str(out)) == 2
    assert "config key 'train.lr_ebm': must be a finite number, got inf" in _error_line(capsys)


def test_no_checkpoint_best_or_export_holds_a_weight_that_is_not_finite(tiny_raw, tiny_images,
                                                                       tmp_path, monkeypatch,
                                                                       capsys):
    """The EBM's weights become NaN in iteration 3 (its losses stay finite): the checkpoint of
    iteration 4 is refused and the run stops in one line; the one of iteration 2 stays."""
    import ebm_vae.core.teach as teach
    real, calls = teach.learn, [0]

    def learn(models, *args):
        out = real(models, *args)
        calls[0] += 1
        if calls[0] == 3:
            weight = next(iter(models.ebm.parameters()))
            weight.set_value(paddle.full(weight.shape, float("nan")))
        return out

    monkeypatch.setattr(teach, "learn", learn)
    run = tmp_path / "run"
    with pytest.raises(TrainingError) as err:
        _run(tiny_raw, tiny_images, run, 6)
    assert "holds NaN or infinite values" in str(err.value) and "ebm weight" in str(err.value)
    assert f"newest checkpoint {run / 'checkpoints' / 'iter_0000002'} is unchanged" in str(err.value)
    assert checkpoint_iteration(run) == 2 and not list((run / "checkpoints").glob(".*"))
    assert all(np.isfinite(v).all() for v in checkpoint_states(run).values())
    nets = {"ebm": runs.build_models(config_from_dict(tiny_raw).model).ebm}
    next(iter(nets["ebm"].parameters())).set_value(paddle.full([4, 1, 3, 3], float("inf")))
    with pytest.raises(NonFiniteWeights):
        checkpoints.write_best(run, 3, nets, "score", 1.0)
    assert not list((run / "checkpoints").glob("best*"))
    bad = run / "checkpoints" / "iter_0000003"  # a checkpoint written before this check existed
    shutil.copytree(latest_checkpoint(run), bad)
    paddle.save(nets["ebm"].state_dict(), str(bad / "ebm.pdparams"))
    capsys.readouterr()
    assert convert_tool.main([str(bad), "--weights-only", str(tmp_path / "w")]) == 2
    assert "ebm weight" in _error_line(capsys) and not (tmp_path / "w").exists()
    assert sample_tool.main(["--ckpt", str(bad), "--n", "2", "--no-progress"]) == 2
    assert f"so {bad} cannot be used: take an earlier checkpoint" in _error_line(capsys)
    assert not list(run.glob("samples*.*"))


@pytest.mark.parametrize("text, key, lines", [
    ("seed: 1\nseed: 2\n", "seed", (1, 2)),
    ("train:\n  lr_ebm: 0.1\n  gamma: 2\n  lr_ebm: 0.2\n", "lr_ebm", (2, 4)),
    ("model:\n  decoder:\n    layers:\n    - {channels: 4, channels: 8}\n", "channels", (4, 4))])
def test_a_key_given_twice_is_refused_naming_it_and_both_lines(text, key, lines, mnist_root,
                                                               tmp_path, capsys):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text(f"base: {_config_file(tmp_path).name}\n{text}")
    assert _train("-c", str(cfg), "--data-root", str(mnist_root), "--out",
                  str(tmp_path / "r")) == 2
    line = _error_line(capsys)
    assert f"{cfg} is not valid YAML: key '{key}' is given twice, on lines " \
           f"{lines[0] + 1} and {lines[1] + 1}" in line, line
    assert not (tmp_path / "r").exists()
    assert _train("-c", str(_config_file(tmp_path)), "--set", "train={gamma: 1, gamma: 2}",
                  "--out", str(tmp_path / "r")) == 2
    assert "key 'gamma' is given twice" in _error_line(capsys)


def test_out_naming_a_file_is_one_line_and_the_file_is_kept(mnist_root, tmp_path, capsys):
    for out in (tmp_path / "file", tmp_path / "file" / "below"):
        (tmp_path / "file").write_text("mine")
        assert _train("-c", str(_config_file(tmp_path)), "--data-root", str(mnist_root),
                      "--out", str(out), "--max-iters", "1") == 2
        assert f"{out} cannot be a run folder: {tmp_path / 'file'} is a file" in _error_line(capsys)
        assert (tmp_path / "file").read_text() == "mine"


def test_a_request_that_cannot_fit_in_memory_is_refused_first(tiny_raw, tiny_images, tmp_path,
                                                              capsys):
    run = tmp_path / "run"
    _run(tiny_raw, tiny_images, run, 2)
    capsys.readouterr()
    for tool, argv in [(sample_tool, ["--n", str(10 ** 11)]),
                       (sample_tool, ["--interpolate", "--pairs", str(10 ** 6), "--points",
                                      str(10 ** 5)]),
                       (evaluate_tool, ["--n", str(10 ** 11), "--metrics", "cls_fid"])]:
        assert tool.main(["--ckpt", str(run), *argv]) == 2
        line = _error_line(capsys)
        assert re.search(r"samples of 1x8x8 \(with their proposals, float32\) would take [\d.]+ "
                         r"GB of memory, but [\d.]+ [GM]B is free; nothing was started", line), line
    assert not list(run.glob("samples*.*")) and not list(run.glob("interpolation*"))
    assert not list(run.glob("eval*"))
    import ebm_vae
    with pytest.raises(UserError, match="would take"):
        ebm_vae.sample(runs.load_run(run), n=10 ** 11)


def _stop_a_tool(argv: list[str], sig: int) -> tuple[int, list[str]]:
    """Start a tool (`argv` after the interpreter), send it `sig` once its sampling progress
    bar has printed its first line, and return (exit code, its stderr lines without Python's
    warnings)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EBM_VAE_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line.rstrip("\n"))
        if line.startswith("sampling ["):
            break
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=60)
    lines += rest.splitlines()
    return proc.returncode, [x for x in lines if "Warning" not in x and "warnings.warn" not in x
                             and not x.startswith("sampling [")]


@pytest.mark.parametrize("sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"),
                                             (signal.SIGINT, 130, "Ctrl-C")])
def test_sample_tool_stops_on_a_signal_in_one_line_writing_nothing(sig, code, name, tiny_raw,
                                                                   tiny_images, tmp_path):
    run = tmp_path / "run"
    _run(tiny_raw, tiny_images, run, 2)
    returncode, err = _stop_a_tool(["tools/sample.py", "--ckpt", str(run), "--n", "100000",
                                    "--batch-size", "1", "--steps", "20"], sig)
    assert returncode == code and err == [f"interrupted ({name}): nothing was written"], err
    assert not list(run.glob(".*tmp*")) and not list(run.glob("samples*.npz"))


def test_evaluate_stops_on_sigterm_in_one_line_writing_nothing(mnist_root, tmp_path):
    from ebm_vae.eval.evaluate import train_and_save_classifier
    run = tmp_path / "run"
    assert _train("-c", str(_config_file(tmp_path)), "--data-root", str(mnist_root), "--out",
                  str(run), "--max-iters", "1") == 0
    train_and_save_classifier(run / "classifier", "mnist", str(mnist_root), 1, progress=False)
    returncode, err = _stop_a_tool(["tools/evaluate.py", "--ckpt", str(run), "--metrics",
                                    "cls_fid", "--n", "100000", "--batch-size", "1", "--steps",
                                    "20"], signal.SIGTERM)
    assert returncode == 143 and err == ["interrupted (SIGTERM)"], err
    assert not list(run.glob("eval*")) and not list(run.glob(".*tmp*"))


def test_seeds_out_of_range_and_an_out_folder_are_one_line(tiny_raw, tiny_images, mnist_root,
                                                           tmp_path, capsys):
    run = tmp_path / "run"
    _run(tiny_raw, tiny_images, run, 2)
    (tmp_path / "folder.npz").mkdir()
    capsys.readouterr()
    for tool, argv, message in [
            (sample_tool, ["--seed", "-1"], "a seed must be in [0, 2^63 - 1], got -1"),
            (sample_tool, ["--seed", str(2 ** 64)], f"got {2 ** 64}"),
            (sample_tool, ["--out", str(tmp_path / "folder.npz")], "is a folder"),
            (evaluate_tool, ["--metrics", "cls_fid", "--out", str(tmp_path / "folder.npz")],
             "is a folder")]:
        assert tool.main(["--ckpt", str(run), "--n", "10", "--no-progress", *argv]) == 2
        assert message in _error_line(capsys)
    assert _train("-c", str(_config_file(tmp_path)), "--data-root", str(mnist_root), "--seed",
                  "-3", "--out", str(tmp_path / "r")) == 2
    assert "config key 'seed': must be in [0, 2^63 - 1], got -3" in _error_line(capsys)
    assert not (tmp_path / "r").exists() and not list(run.glob("samples*.*"))


def test_counts_that_cannot_work_are_one_line(tiny_raw, tiny_images, mnist_root, tmp_path,
                                              capsys):
    """Chains that cannot be allocated (Paddle's own out-of-memory error, for real), and counts
    below 1 that would silently mean "all but the last N"."""
    out = tmp_path / "big"
    assert _train("-c", str(_config_file(tmp_path)), "--data-root", str(mnist_root), "--set",
                  f"train.num_chains={10 ** 12}", "--out", str(out), "--max-iters", "1") == 2
    line = _error_line(capsys)
    assert line.startswith("error: iteration 1: ") and "Lower train.num_chains" in line, line
    assert checkpoint_iteration(out) is None
    run = tmp_path / "run"
    _run(tiny_raw, tiny_images, run, 2)
    capsys.readouterr()
    for flag in ("--recon-n", "--reference-n", "--batch-size"):
        assert evaluate_tool.main(["--ckpt", str(run), flag, "-5"]) == 2
        assert f"{flag} must be >= 1, got -5" in _error_line(capsys)
