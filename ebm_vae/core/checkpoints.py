"""Checkpoint folders: writing and reading one checkpoint (model and optimiser states and the
iteration counter), the kept and the best checkpoints, and converting the old format.

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
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Optional

import paddle

from ebm_vae.utils.atomic import WriteError, fsync_dir, write_bytes, write_text
from ebm_vae.core.states import (CheckpointError, file_name, load_checkpoint, load_layer_states,
                                 to_tensors)

CHECKPOINTS = "checkpoints"
LEGACY_CHECKPOINT = "checkpoints/last.ckpt"  # the old format: one pickle of numpy state dicts
STATE_FILE = "state.json"
FORMAT = 1
_DIR_RE = re.compile(r"^iter_(\d+)$")
BEST = "best"  # checkpoints/best: the state with the best in-training score (same format as iter_N)



# ---------------------------------------------------------------------------------------------
# the checkpoint folders

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


def tensor_bytes(state: dict) -> bytes:
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
            write_bytes(tmp / files[name], tensor_bytes(state))
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


def load_tensor_file(path: Path) -> dict:
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
            "modules": {n: load_tensor_file(path / files[n]) for n in names}}


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
    states = {n: to_tensors(dict(s)) for n, s in state["modules"].items()}
    return write_checkpoint(run_dir, it, dict.fromkeys(states), states,
                            info={"converted_from": LEGACY_CHECKPOINT})


