"""Run folders: their file names, atomic checkpoints (model and optimiser states and the
iteration counter) and loading a trained run."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import paddle

from ebm_vae.core.config import Config, load_config
from ebm_vae.core.models import Models, build_models
from ebm_vae.utils.runtime import configure_runtime, seed_all

CHECKPOINT = "checkpoints/last.ckpt"
NONFINITE_CHECKPOINT = "checkpoints/nonfinite.ckpt"


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, paddle.Tensor):
        return tree.numpy()
    return tree


def _to_tensors(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_tensors(v) for k, v in tree.items()}
    if isinstance(tree, np.ndarray):
        return paddle.to_tensor(tree)
    return tree


def layer_states(layers: dict[str, Any]) -> dict[str, dict]:
    """State dicts (as numpy) of named layers or optimisers."""
    return {name: _to_numpy(obj.state_dict()) for name, obj in layers.items()}


def load_layer_states(layers: dict[str, Any], states: dict[str, dict]) -> None:
    for name, obj in layers.items():
        if name not in states:
            raise KeyError(f"checkpoint has no state for '{name}'")
        obj.set_state_dict(_to_tensors(states[name]))


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Pickle `payload` to `path` atomically: a temporary file, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        pickle.dump(_to_numpy(payload), fh, protocol=4)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except (pickle.UnpicklingError, EOFError, AttributeError) as err:
        raise RuntimeError(f"checkpoint {path} is corrupt or incomplete: {err}") from err


class Run(NamedTuple):
    cfg: Config
    models: Models
    iteration: int  # 0 for an untrained model


def load_run(run_dir: str | Path, untrained: bool = False, device: str | None = None) -> Run:
    """Models of a run folder (config.yaml + checkpoints/last.ckpt), in eval mode, on `device`
    (default: the config's).

    `untrained=True` builds the run's architecture at its seeded initialisation instead (a
    reference point for metrics: what training starts from).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: {run_dir / 'config.yaml'} not found")
    cfg = load_config(run_dir / "config.yaml")
    configure_runtime(device or cfg.device)
    seed_all(cfg.seed)
    models = build_models(cfg.model)
    iteration = 0
    if not untrained:
        state = load_checkpoint(run_dir / CHECKPOINT)
        load_layer_states(models._asdict(), state["modules"])
        iteration = state["iteration"]
    for layer in models:
        layer.eval()  # no dropout; batch norm as configured (bn_batch_stats keeps batch statistics)
    return Run(cfg, models, iteration)
