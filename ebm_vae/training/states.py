"""State dicts: loading them exactly into networks and optimisers (every tensor the objects
expect, with its shape, and nothing else)."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import paddle

from ebm_vae.errors import UserError


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the networks the config describes."""


class NonFiniteWeights(CheckpointError):
    """A network's state holds NaN or infinite values: it is never written."""


def _finite(value: Any) -> bool:
    """Whether a tensor or array holds no NaN or infinity (True for integer ones)."""
    if isinstance(value, paddle.Tensor):
        return not paddle.is_floating_point(value) or bool(paddle.isfinite(value).all())
    array = np.asarray(value)
    return not np.issubdtype(array.dtype, np.floating) or bool(np.isfinite(array).all())


def check_finite(state: dict, name: str, consequence: str) -> None:
    """Raise NonFiniteWeights naming the first tensor of the network `name` that is not finite,
    then `consequence` (e.g. "so X was not written")."""
    for key, value in state.items():
        if hasattr(value, "shape") and not _finite(value):
            raise NonFiniteWeights(f"{name} weight '{key}' holds NaN or infinite values, "
                                   f"{consequence}")


# ---------------------------------------------------------------------------------------------
# numpy -> tensors

def to_tensors(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: to_tensors(v) for k, v in tree.items()}
    if isinstance(tree, np.ndarray):
        return paddle.to_tensor(tree)
    return tree


# ---------------------------------------------------------------------------------------------
# exact state loading

def tensor_shape(v: Any) -> list[int]:
    return [int(s) for s in (v.shape if hasattr(v, "shape") else np.shape(v))]


def _fmt(shape: list[int]) -> str:
    return "[" + ",".join(str(s) for s in shape) + "]"


def _problems(kind: str, missing: Iterable[str], extra: Iterable[str],
              shapes: Iterable[tuple[str, list[int], list[int]]], limit: int = 6) -> list[str]:
    out = []
    for title, names in (("missing", sorted(missing)), ("unexpected", sorted(extra))):
        if names:
            more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
            out.append(f"{title} {', '.join(names[:limit])}{more}")
    shapes = sorted(shapes)
    for name, got, want in shapes[:limit]:
        out.append(f"shape of {name} is {_fmt(got)}, the {kind} expects {_fmt(want)}")
    if len(shapes) > limit:
        out.append(f"{len(shapes) - limit} more shape mismatches")
    return out


def layer_problems(layer: paddle.nn.Layer, state: dict) -> list[str]:
    """How `state` differs from `layer`'s state dict: missing and unexpected tensors, shapes."""
    want = {k: tensor_shape(v) for k, v in layer.state_dict().items()}
    got = {k: tensor_shape(v) for k, v in state.items()}
    return _problems("config", want.keys() - got.keys(), got.keys() - want.keys(),
                     [(k, got[k], want[k]) for k in want.keys() & got.keys() if got[k] != want[k]])


def optimizer_problems(opt: paddle.optimizer.Optimizer, state: dict) -> list[str]:
    """How a saved optimiser state differs from what `opt`'s parameters need. An empty state
    (no step taken yet) fits any optimiser. Otherwise every parameter must have the same set of
    accumulators (`<param>_<kind>`), moments of its shape, and nothing else may be there."""
    tensors = {k: v for k, v in state.items() if hasattr(v, "shape")}
    if not tensors:
        return []
    params = {p.name: tensor_shape(p) for p in opt._parameter_list}
    trainable = {p.name for p in opt._parameter_list if not p.stop_gradient}
    by_param: dict[str, set[str]] = {p: set() for p in params}
    extra, shapes = [], []
    for key, value in tensors.items():
        owner = max((p for p in params if key.startswith(p + "_")), key=len, default=None)
        if owner is None:
            extra.append(key)
            continue
        kind = key[len(owner) + 1:]
        by_param[owner].add(kind)
        if kind.startswith("moment") and tensor_shape(value) != params[owner]:
            shapes.append((key, tensor_shape(value), params[owner]))
    kinds = set().union(*by_param.values())
    missing = [f"{p}_{k}" for p, have in by_param.items() if p in trainable
               for k in sorted(kinds - have)]
    return _problems("optimiser", missing, extra, shapes)


def check_states(objects: dict[str, Any], states: dict[str, dict], where: str,
                 label: Any = None) -> None:
    """Raise CheckpointError naming every tensor that is missing, unexpected or of the wrong
    shape, per file (`label(name)`, default `<name>.pdparams` / `.pdopt`). Paddle's own
    set_state_dict only warns, and leaves such tensors at their current values."""
    label = label or file_name
    problems = []
    for name, obj in objects.items():
        if name not in states:
            problems.append(f"{label(name)}: not in the checkpoint")
            continue
        found = (optimizer_problems(obj, states[name]) if _is_optimizer(obj)
                 else layer_problems(obj, states[name]))
        if found:
            problems.append(f"{label(name)}: " + "; ".join(found))
    if problems:
        raise CheckpointError(f"{where} does not fit the networks of the config: "
                              + " | ".join(problems))


def load_layer_states(layers: dict[str, Any], states: dict[str, dict], where: str = "checkpoint",
                      label: Any = None) -> None:
    """Set the states of named layers and optimisers, exactly (see `check_states`)."""
    check_states(layers, states, where, label)
    for name, obj in layers.items():
        obj.set_state_dict(to_tensors(dict(states[name])))


def _is_optimizer(obj: Any) -> bool:
    return isinstance(obj, paddle.optimizer.Optimizer)


def file_name(name: str, obj: Any = None) -> str:
    """`<name>.pdopt` for optimisers (opt_*), `<name>.pdparams` for networks."""
    is_opt = _is_optimizer(obj) if obj is not None else name.startswith("opt_")
    return f"{name}.pdopt" if is_opt else f"{name}.pdparams"
