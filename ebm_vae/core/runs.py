"""Run folders: their file names, checkpoints (model and optimiser states and the iteration
counter), exact state loading, and loading a trained run.

Checkpoint layout (Paddle's conventions), one folder per checkpoint, only the newest kept:

    RUN/checkpoints/iter_0000200/
        ebm.pdparams  encoder.pdparams  decoder.pdparams    paddle.save(layer.state_dict())
        opt_ebm.pdopt  opt_vae.pdopt                         paddle.save(optimizer.state_dict())
        state.json                                           {"format": 1, "iteration": 200, ...}

A checkpoint is written whole or not at all: its files go to a hidden temporary folder
(`.iter_0000200.tmp-PID`), each fsynced, and the folder is renamed into place; older checkpoint
folders are removed only after that. The newest `iter_*` folder holding a `state.json` is the
run's checkpoint. Runs of the old format (`checkpoints/last.ckpt`, one pickle) still load;
`tools/convert_run.py RUN` converts them. A folder holding just `config.yaml` and the three
`.pdparams` (shipped weights) loads for sampling and evaluation.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Optional

import numpy as np
import paddle

from ebm_vae.core.config import Config, load_config
from ebm_vae.core.models import Models, build_models
from ebm_vae.errors import UserError
from ebm_vae.utils.atomic import WriteError, fsync_dir, write_bytes, write_text
from ebm_vae.utils.runtime import configure_runtime, seed_all

CHECKPOINTS = "checkpoints"
LEGACY_CHECKPOINT = "checkpoints/last.ckpt"  # the old format: one pickle of numpy state dicts
STATE_FILE = "state.json"
FORMAT = 1
NETWORKS = ("ebm", "encoder", "decoder")
_DIR_RE = re.compile(r"^iter_(\d+)$")
BEST = "best"  # checkpoints/best: the state with the best in-training score (same format as iter_N)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the networks the config describes."""


class RunNotFoundError(UserError, FileNotFoundError):
    """A folder is not a run folder (no config.yaml) or holds no weights."""


# ---------------------------------------------------------------------------------------------
# numpy <-> tensors, and the old pickle format

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


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Pickle `payload` (tensors as numpy) to one file, atomically. The old run-checkpoint
    format, still used for single-file artefacts (the classifier)."""
    write_bytes(path, pickle.dumps(_to_numpy(payload), protocol=4))


def load_checkpoint(path: str | Path) -> dict:
    """Read a pickle written by `save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, IndexError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or incomplete: {err}") from err


# ---------------------------------------------------------------------------------------------
# exact state loading

def _shape(v: Any) -> list[int]:
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
    want = {k: _shape(v) for k, v in layer.state_dict().items()}
    got = {k: _shape(v) for k, v in state.items()}
    return _problems("config", want.keys() - got.keys(), got.keys() - want.keys(),
                     [(k, got[k], want[k]) for k in want.keys() & got.keys() if got[k] != want[k]])


def optimizer_problems(opt: paddle.optimizer.Optimizer, state: dict) -> list[str]:
    """How a saved optimiser state differs from what `opt`'s parameters need. An empty state
    (no step taken yet) fits any optimiser. Otherwise every parameter must have the same set of
    accumulators (`<param>_<kind>`), moments of its shape, and nothing else may be there."""
    tensors = {k: v for k, v in state.items() if hasattr(v, "shape")}
    if not tensors:
        return []
    params = {p.name: _shape(p) for p in opt._parameter_list}
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
        if kind.startswith("moment") and _shape(value) != params[owner]:
            shapes.append((key, _shape(value), params[owner]))
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
        obj.set_state_dict(_to_tensors(dict(states[name])))


# ---------------------------------------------------------------------------------------------
# the checkpoint folders

def _is_optimizer(obj: Any) -> bool:
    return isinstance(obj, paddle.optimizer.Optimizer)


def file_name(name: str, obj: Any = None) -> str:
    """`<name>.pdopt` for optimisers (opt_*), `<name>.pdparams` for networks."""
    is_opt = _is_optimizer(obj) if obj is not None else name.startswith("opt_")
    return f"{name}.pdopt" if is_opt else f"{name}.pdparams"


def checkpoint_dirs(run_dir: str | Path) -> list[tuple[int, Path]]:
    """The complete checkpoint folders of a run (with a state.json), oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _DIR_RE.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


_LEGACY_ITERATIONS: dict[tuple, int] = {}


def _legacy_iteration(path: Path) -> int:
    """The iteration of an old-format checkpoint (cached per file version: it is one pickle)."""
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _LEGACY_ITERATIONS:
        _LEGACY_ITERATIONS.clear()
        _LEGACY_ITERATIONS[key] = int(load_checkpoint(path)["iteration"])
    return _LEGACY_ITERATIONS[key]


def latest_checkpoint(run_dir: str | Path) -> Optional[Path]:
    """The newest checkpoint of a run: an `iter_*` folder, or the old-format `last.ckpt` (also
    when both exist and `last.ckpt` is further along, e.g. an old process kept training after a
    conversion); None if the run has none."""
    dirs = checkpoint_dirs(run_dir)
    legacy = Path(run_dir) / LEGACY_CHECKPOINT
    if not legacy.is_file():
        return dirs[-1][1] if dirs else None
    if dirs and dirs[-1][0] >= _legacy_iteration(legacy):
        return dirs[-1][1]
    return legacy


def split_checkpoint(path: str | Path) -> tuple[Path, Optional[Path]]:
    """(run folder, checkpoint) for `path`: a run folder (checkpoint None: use its newest) or one
    of its checkpoint folders, `RUN/checkpoints/iter_N` or `RUN/checkpoints/best` (which must be
    complete)."""
    path = Path(path)
    if (_DIR_RE.match(path.name) or path.name == BEST) and path.parent.name == CHECKPOINTS:
        if not (path / STATE_FILE).is_file():
            raise CheckpointError(f"{path} is not a complete checkpoint: {STATE_FILE} not found")
        return path.parent.parent, path
    return path, None


def output_place(path: str | Path) -> tuple[Path, str]:
    """Where tools write by default for `path`: (the run folder, "") for a run folder, and (its
    run folder, "_iter_N") for a checkpoint folder, which the trainer deletes when it moves on."""
    run_dir, found = split_checkpoint(path)
    return run_dir, f"_{found.name}" if found is not None else ""


def chosen_checkpoint(path: str | Path) -> tuple[Path, Optional[Path]]:
    """(run folder, the checkpoint to read: the one `path` names, else the run's newest)."""
    run_dir, found = split_checkpoint(path)
    return run_dir, found or latest_checkpoint(run_dir)


def has_checkpoint(run_dir: str | Path) -> bool:
    return latest_checkpoint(run_dir) is not None


def _tensor_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    paddle.save(state, buf)
    return buf.getvalue()


def _remove_tree(path: Path) -> None:
    """Remove a checkpoint folder, its state.json first (so a half-removed folder never counts)."""
    with contextlib.suppress(OSError):
        (path / STATE_FILE).unlink()
    shutil.rmtree(path, ignore_errors=True)


def _write_folder(target: Path, iteration: int, objects: dict[str, Any],
                  states: Optional[dict[str, dict]], info: Optional[dict]) -> None:
    """Write the state dicts of `objects` (or the given `states`) and state.json into a temporary
    folder beside `target`, then rename it to `target` (which must not exist). Whole or not at
    all: on failure the temporary folder is removed and a one-line WriteError is raised."""
    folder = target.parent
    tmp = folder / f".{target.name}.tmp-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f".{target.name[:4]}*.tmp-*"):  # left by a killed process
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
        files = {}
        for name, obj in objects.items():
            state = states[name] if states is not None else obj.state_dict()
            files[name] = file_name(name, obj)
            write_bytes(tmp / files[name], _tensor_bytes(state))
        write_text(tmp / STATE_FILE, json.dumps(
            {"format": FORMAT, "iteration": int(iteration), "files": files, **(info or {})},
            indent=1) + "\n")
        os.rename(tmp, target)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        why = str(err) if isinstance(err, WriteError) else (
            f"cannot write checkpoint {target}: {err.strerror or err}")
        raise WriteError(f"{why}; the previous checkpoint is unchanged") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(folder)


def write_checkpoint(run_dir: str | Path, iteration: int, objects: dict[str, Any],
                     states: Optional[dict[str, dict]] = None, info: Optional[dict] = None,
                     keep_every: int = 0) -> Path:
    """Write a checkpoint folder `iter_NNNNNNN` for `iteration`: the state dicts of `objects`
    (networks -> .pdparams, optimisers -> .pdopt), or the given `states` (e.g. a snapshot), plus
    state.json. Whole or not at all; on failure (e.g. a full disk) the temporary folder is
    removed, the previous checkpoint stays, and a one-line WriteError is raised. An existing
    checkpoint of the same iteration is kept (`info` is added to its state.json). Older
    checkpoints are removed after, except those at multiples of `keep_every` (if > 0)."""
    target = Path(run_dir) / CHECKPOINTS / f"iter_{iteration:07d}"
    if (target / STATE_FILE).is_file():  # the same state: keep it, add `info` to state.json
        if info:
            meta = json.loads((target / STATE_FILE).read_text())
            write_text(target / STATE_FILE, json.dumps({**meta, **info}, indent=1) + "\n")
        return target
    if target.exists():  # an incomplete folder (no state.json): never a checkpoint
        shutil.rmtree(target)
    _write_folder(target, iteration, objects, states, info)
    for it, old in checkpoint_dirs(run_dir):
        if it < iteration and not (keep_every > 0 and it % keep_every == 0):
            _remove_tree(old)
    return target


def write_best(run_dir: str | Path, iteration: int, objects: dict[str, Any], metric: str,
               value: float) -> Path:
    """Replace `checkpoints/best` by the current state of `objects`, scored `metric` = `value`
    (kept in its state.json). The new folder is complete before the old one is removed."""
    folder = Path(run_dir) / CHECKPOINTS
    target, old = folder / BEST, folder / f".{BEST}.old-{os.getpid()}"
    fresh = folder / f"{BEST}.new"
    if fresh.exists():
        shutil.rmtree(fresh)
    _write_folder(fresh, iteration, objects, None, {"score": {"metric": metric, "value": value}})
    if target.exists():
        os.rename(target, old)
    os.rename(fresh, target)
    fsync_dir(folder)
    for stale in folder.glob(f".{BEST}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return target


def best_score(run_dir: str | Path) -> Optional[tuple[str, float, int]]:
    """(metric, value, iteration) of a run's `checkpoints/best`, None if it has none. A best
    folder caught between its two renames (a crash) is found under `best.new`."""
    folder = Path(run_dir) / CHECKPOINTS
    for name in (BEST, f"{BEST}.new"):
        if (folder / name / STATE_FILE).is_file():
            if name != BEST:
                os.rename(folder / name, folder / BEST)
            try:
                meta = json.loads((folder / BEST / STATE_FILE).read_text())
                return meta["score"]["metric"], float(meta["score"]["value"]), int(meta["iteration"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise CheckpointError(f"{folder / BEST / STATE_FILE} is corrupt: {err}") from err
    return None


def snapshot_states(objects: dict[str, Any]) -> dict[str, dict]:
    """Copies of the state dicts of named networks and optimisers (on their device), to save or
    restore later: the in-place updates of the next step do not reach them."""
    with paddle.no_grad():
        return {name: {k: v.clone() if isinstance(v, paddle.Tensor) else v
                       for k, v in obj.state_dict().items()}
                for name, obj in objects.items()}


def _load_tensor_file(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path} not found")
    try:
        state = paddle.load(str(path))
    except Exception as err:  # noqa: BLE001 - paddle.load raises many types on a damaged file
        raise CheckpointError(f"{path} is corrupt or not a Paddle state dict: {err}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a Paddle state dict (got {type(state).__name__})")
    return state


def read_checkpoint(path: str | Path, names: Iterable[str] = ()) -> dict:
    """{"iteration": int, "modules": {name: state dict}} from a checkpoint folder, an old-format
    `last.ckpt`, or a run folder (its newest checkpoint). `names`: the states to read (default:
    all the checkpoint has)."""
    path = Path(path)
    if path.is_dir() and not (path / STATE_FILE).is_file():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"no checkpoint in {path / CHECKPOINTS}")
        path = found
    if path.is_file():  # the old format
        state = load_checkpoint(path)
        if not isinstance(state, dict) or "modules" not in state or "iteration" not in state:
            raise CheckpointError(f"{path} is not a run checkpoint")
        return state
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        meta = json.loads((path / STATE_FILE).read_text())
        iteration, files = int(meta["iteration"]), dict(meta["files"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path / STATE_FILE} is corrupt: {err}") from err
    names = list(names) or list(files)
    missing = [n for n in names if n not in files]
    if missing:
        raise CheckpointError(f"checkpoint {path} has no {', '.join(missing)}")
    return {"iteration": iteration, "meta": meta,
            "modules": {n: _load_tensor_file(path / files[n]) for n in names}}


def checkpoint_iteration(run_dir: str | Path) -> Optional[int]:
    """The iteration of a run's newest checkpoint, None without one (reads only state.json)."""
    found = latest_checkpoint(run_dir)
    if found is None:
        return None
    if found.is_file():
        return _legacy_iteration(found)
    try:
        return int(json.loads((found / STATE_FILE).read_text())["iteration"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{found / STATE_FILE} is corrupt: {err}") from err


def load_checkpoint_into(found: str | Path, objects: dict[str, Any]) -> int:
    """Load one checkpoint (a checkpoint folder, or an old-format file such as `last.ckpt`) into
    `objects` (networks and optimisers), exactly; returns its iteration."""
    found = Path(found)
    state = read_checkpoint(found, [] if found.is_file() else objects)
    label = (lambda n: f"{found.name}[{n}]") if found.is_file() else None
    load_layer_states(objects, state["modules"], str(found), label)
    return int(state["iteration"])


def load_objects(run_dir: str | Path, objects: dict[str, Any]) -> int:
    """Load the newest checkpoint of a run into `objects` (networks and optimisers), exactly;
    returns its iteration."""
    found = latest_checkpoint(run_dir)
    if found is None:
        raise CheckpointError(f"no checkpoint in {Path(run_dir) / CHECKPOINTS}")
    return load_checkpoint_into(found, objects)


def convert_legacy(run_dir: str | Path) -> Path:
    """Write the old-format `checkpoints/last.ckpt` of a run as a checkpoint folder (the old
    file is left in place; the folder takes precedence)."""
    run_dir = Path(run_dir)
    legacy = run_dir / LEGACY_CHECKPOINT
    if not legacy.is_file():
        raise CheckpointError(f"{legacy} not found: nothing to convert")
    state = read_checkpoint(legacy)
    it = int(state["iteration"])
    newer = [i for i, _ in checkpoint_dirs(run_dir) if i >= it]
    if newer:
        raise CheckpointError(f"{run_dir} already has a checkpoint at iteration {max(newer)} "
                              f"(the old one is at {it}): nothing to convert")
    states = {n: _to_tensors(dict(s)) for n, s in state["modules"].items()}
    return write_checkpoint(run_dir, it, dict.fromkeys(states), states,
                            info={"converted_from": LEGACY_CHECKPOINT})


def export_weights(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write `out_dir/config.yaml`, the three networks' `.pdparams` and `weights.json` (the
    iteration) from a run's newest checkpoint (either format), or from the checkpoint folder
    `run_dir` names: a folder `open_run` and tools/sample.py load, with no optimiser states and
    no data."""
    (run_dir, found), out_dir = chosen_checkpoint(run_dir), Path(out_dir)
    if found is None:
        raise CheckpointError(f"no checkpoint in {run_dir / CHECKPOINTS}")
    state = read_checkpoint(found, [] if found.is_file() else NETWORKS)
    for name in NETWORKS:
        if name not in state["modules"]:
            raise CheckpointError(f"{found} has no state for '{name}'")
        write_bytes(out_dir / f"{name}.pdparams",
                    _tensor_bytes(_to_tensors(dict(state["modules"][name]))))
    write_text(out_dir / WEIGHTS_INFO, json.dumps({"iteration": state["iteration"]}) + "\n")
    write_bytes(out_dir / "config.yaml", (run_dir / "config.yaml").read_bytes())
    return out_dir


# ---------------------------------------------------------------------------------------------
# architectures and loading a trained run

def model_shapes(model_cfg: Any, build: Any = build_models) -> dict[str, dict[str, list[int]]]:
    """{"ebm": {tensor: shape}, ...} of the networks a model config describes (built lazily:
    no parameter memory, no random numbers drawn)."""
    with paddle.LazyGuard():
        models = build(model_cfg)
    return {name: {k: _shape(v) for k, v in layer.state_dict().items()}
            for name, layer in models._asdict().items()}


class Run(NamedTuple):
    cfg: Config
    models: Models
    iteration: Optional[int]  # 0 for an untrained model; None for bare weights of unknown age


WEIGHTS_INFO = "weights.json"  # beside exported weights: {"iteration": N}


def _weights_iteration(run_dir: Path) -> Optional[int]:
    """The iteration recorded beside exported weights (None when there is no record)."""
    path = run_dir / WEIGHTS_INFO
    if not path.is_file():
        return None
    try:
        return int(json.loads(path.read_text())["iteration"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is corrupt: {err}") from err


def _bare_weights(run_dir: Path) -> bool:
    return all((run_dir / f"{n}.pdparams").is_file() for n in NETWORKS)


def open_run(run_dir: str | Path, untrained: bool = False) -> Run:
    """Config and models of a run folder, in eval mode, without touching the runtime (device,
    threads). Weights: the newest checkpoint, an old-format last.ckpt, or `ebm.pdparams`,
    `encoder.pdparams`, `decoder.pdparams` beside config.yaml (shipped weights); `run_dir` may
    also name one checkpoint folder, `RUN/checkpoints/iter_N`, to load that one.
    `untrained=True` builds the run's architecture at its seeded initialisation instead."""
    run_dir, found = chosen_checkpoint(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunNotFoundError(f"{run_dir} is not a run folder: {run_dir / 'config.yaml'} not found")
    cfg = load_config(run_dir / "config.yaml")
    seed_all(cfg.seed)
    models = build_models(cfg.model)
    iteration: Optional[int] = 0
    if not untrained:
        layers = models._asdict()
        if found is not None:
            iteration = load_checkpoint_into(found, layers)
        elif _bare_weights(run_dir):
            states = {n: _load_tensor_file(run_dir / f"{n}.pdparams") for n in NETWORKS}
            load_layer_states(layers, states, str(run_dir))
            iteration = _weights_iteration(run_dir)
        else:
            raise RunNotFoundError(
                f"{run_dir} holds no weights: no checkpoint in {run_dir / CHECKPOINTS} and no "
                f"{', '.join(n + '.pdparams' for n in NETWORKS)} beside config.yaml")
    for layer in models:
        layer.eval()  # no dropout; batch norm as configured (bn_batch_stats keeps batch statistics)
    return Run(cfg, models, iteration)


def load_run(run_dir: str | Path, untrained: bool = False, device: str | None = None,
             threads: int | None = None) -> Run:
    """`open_run` after selecting `device` (default: the config's) and the CPU settings
    (`threads` math threads; default `runtime.default_threads()`), as the tools do. `run_dir`:
    a run folder or one of its checkpoint folders."""
    folder = split_checkpoint(run_dir)[0]
    if not (folder / "config.yaml").is_file():
        raise RunNotFoundError(f"{folder} is not a run folder: {folder / 'config.yaml'} not found")
    configure_runtime(device or load_config(folder / "config.yaml").device, threads)
    return open_run(run_dir, untrained)
