"""Shared fixtures: a tiny architecture so training tests run in seconds on a CPU."""
from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ebm_vae.training.checkpoints import read_checkpoint

TINY = {
    "seed": 3,
    "device": "cpu",
    "data": {"name": "mnist", "root": None, "shuffle": "every_epoch"},
    "model": {
        "image_size": 8, "channels": 1, "latent_dim": 4,
        "ebm": {"conv": [{"channels": 4, "kernel": 3, "stride": 2}], "out_dim": 2},
        "encoder": {"conv": [{"channels": 4, "kernel": 3, "stride": 2}], "dropout": 0.1},
        "decoder": {"act": "relu", "layers": [
            {"channels": 4, "kernel": 4, "stride": 1, "padding": 0, "batch_norm": True},
            {"channels": 1, "kernel": 4, "stride": 2, "padding": 1}]},
    },
    "langevin": {"steps": 2, "step_size": 0.01, "ref_sigma": 0.5, "noise": True},
    "train": {"epochs": 3, "batch_size": 6, "num_chains": 5, "gamma": 2.0, "lr_ebm": 0.001,
              "lr_vae": 0.001, "sample_every": 2, "checkpoint_every": 2},
}


@pytest.fixture(autouse=True)
def _empty_user_cache(tmp_path_factory, monkeypatch):
    """Every test sees an empty user cache and no $EBM_VAE_INCEPTION: no converted Inception
    weights or cached statistics of this machine leak in (a found weights file would start
    Inception over a whole split)."""
    monkeypatch.setenv("EBM_VAE_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("EBM_VAE_INCEPTION", raising=False)


@pytest.fixture
def tiny_raw() -> dict:
    """A raw (unvalidated) config dict for 8x8 grayscale images."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_images() -> np.ndarray:
    """16 smooth 8x8 images in [-1, 1] (fixed seed)."""
    rng = np.random.default_rng(0)
    base = np.linspace(-1, 1, 8, dtype=np.float32)
    imgs = base[None, None, :, None] * base[None, None, None, :] * rng.uniform(0.5, 1, (16, 1, 1, 1))
    return imgs.astype(np.float32)


ROOT = Path(__file__).resolve().parents[1]


def log_rows(run: Path) -> int:
    """The number of rows in a run's log.csv (0 without one)."""
    try:
        return max(0, len((run / "log.csv").read_text().splitlines()) - 1)
    except OSError:
        return 0


def signal_training(argv: list[str], run: Path, sig: int) -> tuple[int, str, int]:
    """Start a training tool (`argv` after the interpreter; cwd: the repository), send it `sig`
    once it has logged two more rows, and return (exit code, stderr, rows before)."""
    before = log_rows(run)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EBM_VAE_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, *argv, "--no-progress"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while log_rows(run) < before + 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, before


def _as_numpy(tree):
    if isinstance(tree, dict):
        return {k: _as_numpy(v) for k, v in tree.items()}
    return tree.numpy() if hasattr(tree, "numpy") else tree


def write_old_checkpoint(path: Path, payload: dict) -> Path:
    """A checkpoint of the old format: one pickle of `payload` with its tensors as numpy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(_as_numpy(payload), protocol=4))
    return path


def old_modules(objects: dict) -> dict:
    """The old format's "modules": the state dicts of named networks and optimisers, as numpy."""
    return {name: _as_numpy(dict(obj.state_dict())) for name, obj in objects.items()}


def checkpoint_states(run_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of the run's checkpoint (networks and optimisers), as numpy."""
    mods = read_checkpoint(run_dir)["modules"]
    return {f"{m}/{k}": np.asarray(v.numpy() if hasattr(v, "numpy") else v)
            for m, state in mods.items() for k, v in state.items() if hasattr(v, "shape")}


def assert_same_states(a: Path, b: Path) -> None:
    """Every tensor of two runs' checkpoints (networks and both Adams) is equal."""
    sa, sb = checkpoint_states(a), checkpoint_states(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
