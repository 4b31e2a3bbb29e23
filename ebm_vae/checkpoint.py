"""Atomic checkpoints: model and optimiser states and the iteration counter."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import paddle


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
