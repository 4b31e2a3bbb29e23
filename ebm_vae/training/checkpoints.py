"""Checkpoint folders: writing and reading one checkpoint (model and optimiser states and the
iteration counter), the kept and the best checkpoints. The same folder format holds any named
state dicts with a small JSON record (e.g. the offline classifier, ebm_vae.eval.classifier).

Checkpoint layout (Paddle's conventions), one folder per checkpoint, only the newest kept:

    RUN/checkpoints/iter_0000200/
        ebm.pdparams  encoder.pdparams  decoder.pdparams    paddle.save(layer.state_dict())
        opt_ebm.pdopt  opt_vae.pdopt                         paddle.save(optimizer.state_dict())
        state.json                                           {"format": 1, "iteration": 200, ...}

A checkpoint is written whole or not at all: its files go to a hidden temporary folder
(`.iter_0000200.tmp-PID`), each fsynced, and the folder is renamed into place; older checkpoint
folders are removed only after that. The newest `iter_*` folder holding a `state.json` is the
run's checkpoint. A folder holding just `config.yaml` and the three `.pdparams` (shipped
weights) loads for sampling and evaluation.

The old format (one pickle: a run's `checkpoints/last.ckpt`, a classifier `.ckpt`, a completion
snapshot `snapshots/iter_N.ckpt`) is read only by `tools/convert_run.py PATH`
(ebm_vae.training.legacy); anything else pointed at one raises a one-line `LegacyFormatError`
that says so.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, TypeVar

import paddle

from ebm_vae.utils.atomic import WriteError, fsync_dir, write_bytes, write_text
from ebm_vae.training.states import CheckpointError, check_finite, file_name, load_layer_states

CHECKPOINTS = "checkpoints"
LEGACY_CHECKPOINT = "checkpoints/last.ckpt"  # the old format: one pickle of numpy state dicts
LEGACY_SUFFIX = ".ckpt"  # old single-file checkpoints: last.ckpt, classifier.ckpt, iter_N.ckpt
STATE_FILE = "state.json"
FORMAT = 1
_DIR_RE = re.compile(r"^iter_(\d+)$")
T = TypeVar("T")
BEST = "best"  # checkpoints/best: the state with the best in-training score (same format as iter_N)


class LegacyFormatError(CheckpointError):
    """A checkpoint of the old format (one pickle), which only tools/convert_run.py reads."""


def legacy_error(path: str | Path) -> LegacyFormatError:
    return LegacyFormatError(f"{path} is a checkpoint of the old format (one pickle), which is no "
                             f"longer read: convert it with `python tools/convert_run.py {path}`")


def _is_pickle(path: Path) -> bool:
    """Whether `path` is a file that starts like a pickle (protocol 2 or later), unread beyond."""
    try:
        with open(path, "rb") as fh:
            return fh.read(1) == b"\x80"
    except OSError:
        return False


def legacy_file(path: str | Path) -> Optional[Path]:
    """The old-format file (a pickle named `*.ckpt`) `path` is, or the one it replaces (`path` +
    `.ckpt`), if any."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + LEGACY_SUFFIX)):
        if candidate.suffix == LEGACY_SUFFIX and candidate.is_file() and _is_pickle(candidate):
            return candidate
    return None


# ---------------------------------------------------------------------------------------------
# the checkpoint folders

def checkpoint_dirs(run_dir: str | Path) -> list[tuple[int, Path]]:
    """The complete checkpoint folders of a run (with a state.json), oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    for _ in range(5):  # none complete, but iter_* listed: a trainer moved on meanwhile; again
        listed = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _DIR_RE.match(p.name))]
        found = [(it, p) for it, p in listed if (p / STATE_FILE).is_file()]
        if found or not listed:
            break
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Optional[Path]:
    """The newest `iter_*` checkpoint folder of a run; None if it has none. A run whose only
    checkpoint is the old-format `checkpoints/last.ckpt` raises LegacyFormatError."""
    dirs = checkpoint_dirs(run_dir)
    if dirs:
        return dirs[-1][1]
    legacy = Path(run_dir) / LEGACY_CHECKPOINT
    if legacy.is_file():
        raise legacy_error(legacy)
    return None


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


def read_newest(path: str | Path, read: Callable[[Path, Optional[Path]], T], tries: int = 20) -> T:
    """`read(run folder, checkpoint)` for the checkpoint folder `path` names, else for the newest
    checkpoint of the run folder `path` (None if it has none). A trainer writing the run removes
    the older checkpoint once the next one is complete, so when the one chosen goes (its
    state.json gone) before or while it is read, the newest is chosen again, up to `tries` times."""
    run_dir, named = split_checkpoint(path)
    if named is not None:
        return read(run_dir, named)
    for attempt in range(tries):
        found = latest_checkpoint(run_dir)
        try:
            return read(run_dir, found)
        except CheckpointError:
            if found is None or (found / STATE_FILE).is_file() or attempt == tries - 1:
                raise


def has_checkpoint(run_dir: str | Path) -> bool:
    return latest_checkpoint(run_dir) is not None


def tensor_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # a fresh optimiser's state is empty; Paddle warns, saves it
        warnings.filterwarnings("ignore", message="The input state dict is empty")
        paddle.save(state, buf)
    return buf.getvalue()


def _remove_tree(path: Path) -> None:
    """Remove a checkpoint folder, its state.json first (so a half-removed folder never counts)."""
    with contextlib.suppress(OSError):
        (path / STATE_FILE).unlink()
    shutil.rmtree(path, ignore_errors=True)


def _write_folder(target: Path, objects: dict[str, Any], states: Optional[dict[str, dict]],
                  meta: dict) -> None:
    """Write the state dicts of `objects` (or the given `states`) and state.json (`meta` plus the
    format and the file names) into a temporary folder beside `target`, then rename it to
    `target` (which must not exist). Whole or not at all: on failure the temporary folder is
    removed and a one-line WriteError is raised."""
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
            if files[name].endswith(".pdparams"):
                check_finite(state, name, f"so {target} was not written")
            write_bytes(tmp / files[name], tensor_bytes(state))
        write_text(tmp / STATE_FILE, json.dumps({"format": FORMAT, **meta, "files": files},
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


def write_kept(folder: str | Path, iteration: int, objects: dict[str, Any],
               states: Optional[dict[str, dict]] = None, info: Optional[dict] = None) -> Path:
    """Write `folder/iter_NNNNNNN`, a checkpoint folder of `objects` (or the given `states`) that
    nothing prunes (e.g. `RUN/snapshots`, the states a training-time evaluation scored); an
    existing complete one of the same iteration is kept as it is. Whole or not at all."""
    target = Path(folder) / f"iter_{iteration:07d}"
    if (target / STATE_FILE).is_file():
        return target
    if target.exists():  # an incomplete folder (no state.json): never a checkpoint
        shutil.rmtree(target)
    _write_folder(target, objects, states, {"iteration": int(iteration), **(info or {})})
    return target


def write_checkpoint(run_dir: str | Path, iteration: int, objects: dict[str, Any],
                     states: Optional[dict[str, dict]] = None, info: Optional[dict] = None,
                     keep_every: int = 0) -> Path:
    """Write a checkpoint folder `checkpoints/iter_NNNNNNN` for `iteration`: the state dicts of
    `objects` (networks -> .pdparams, optimisers -> .pdopt), or the given `states` (e.g. a
    snapshot), plus state.json. Whole or not at all; on failure (e.g. a full disk) the temporary
    folder is removed, the previous checkpoint stays, and a one-line WriteError is raised. An
    existing checkpoint of the same iteration is kept (`info` is added to its state.json). Older
    checkpoints are removed after, except those at multiples of `keep_every` (if > 0)."""
    target = Path(run_dir) / CHECKPOINTS / f"iter_{iteration:07d}"
    if (target / STATE_FILE).is_file():  # the same state: keep it, add `info` to state.json
        if info:
            meta = json.loads((target / STATE_FILE).read_text())
            write_text(target / STATE_FILE, json.dumps({**meta, **info}, indent=1) + "\n")
        return target
    write_kept(target.parent, iteration, objects, states, info)
    for it, old in checkpoint_dirs(run_dir):
        if it < iteration and not (keep_every > 0 and it % keep_every == 0):
            _remove_tree(old)
    return target


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def replace_folder(target: str | Path, objects: dict[str, Any],
                   states: Optional[dict[str, dict]], meta: dict) -> Path:
    """Write a state folder (see `_write_folder`) at `target`, replacing whatever is there: the
    new folder is complete (as `<target>.new`) before the old one is moved aside and removed."""
    target = Path(target)
    fresh = target.with_name(f"{target.name}.new")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if fresh.exists():
        shutil.rmtree(fresh)
    _write_folder(fresh, objects, states, meta)
    if target.exists():
        os.rename(target, old)
    os.rename(fresh, target)
    fsync_dir(target.parent)
    for stale in target.parent.glob(f".{target.name}.old-*"):
        _remove(stale)
    return target


def write_best(run_dir: str | Path, iteration: int, objects: dict[str, Any], metric: str,
               value: float) -> Path:
    """Replace `checkpoints/best` by the current state of `objects`, scored `metric` = `value`
    (kept in its state.json). The new folder is complete before the old one is removed."""
    return replace_folder(Path(run_dir) / CHECKPOINTS / BEST, objects, None, {
        "iteration": int(iteration), "score": {"metric": metric, "value": value}})


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


def _missing_folder(path: Path) -> CheckpointError:
    """The error for a path that is not a state folder: an old-format file (or one beside it)
    gets the converter's hint."""
    old = legacy_file(path)
    if old is not None:
        return legacy_error(old)
    if path.is_file():
        return CheckpointError(f"{path} is a file, not a checkpoint folder")
    if path.is_dir():
        return CheckpointError(f"{path} is not a checkpoint: {STATE_FILE} not found")
    return CheckpointError(f"no checkpoint at {path}")


def read_meta(folder: str | Path) -> dict:
    """The state.json of a state folder (its `files` checked to be a dict)."""
    folder = Path(folder)
    if not (folder / STATE_FILE).is_file():
        raise _missing_folder(folder)
    try:
        meta = json.loads((folder / STATE_FILE).read_text())
        if not isinstance(meta, dict) or not isinstance(meta["files"], dict):
            raise TypeError("not a record of files")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{folder / STATE_FILE} is corrupt: {err}") from err
    return meta


def read_folder(folder: str | Path, names: Iterable[str] = ()) -> dict:
    """{"meta": state.json, "modules": {name: state dict}} of a state folder; `names`: the states
    to read (default: all it has)."""
    folder = Path(folder)
    meta = read_meta(folder)
    names = list(names) or list(meta["files"])
    missing = [n for n in names if n not in meta["files"]]
    if missing:
        raise CheckpointError(f"checkpoint {folder} has no {', '.join(missing)}")
    return {"meta": meta, "modules": {n: load_tensor_file(folder / meta["files"][n]) for n in names}}


def _iteration(folder: Path, meta: dict) -> int:
    try:
        return int(meta["iteration"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{folder / STATE_FILE} is corrupt: no iteration ({err})") from err


def read_checkpoint(path: str | Path, names: Iterable[str] = ()) -> dict:
    """{"iteration": int, "folder": the folder read, "meta": state.json, "modules": {name: state
    dict}} from a checkpoint folder or a run folder (its newest checkpoint, see `read_newest`). `names`: the states to
    read (default: all the checkpoint has)."""
    path, names = Path(path), list(names)
    if not path.is_dir() or (path / STATE_FILE).is_file():  # a state folder (or nothing)
        state = read_folder(path, names)
        return {"iteration": _iteration(path, state["meta"]), "folder": path, **state}

    def read(run_dir: Path, found: Optional[Path]) -> dict:
        if found is None:
            raise CheckpointError(f"no checkpoint in {run_dir / CHECKPOINTS}")
        state = read_folder(found, names)
        return {"iteration": _iteration(found, state["meta"]), "folder": found, **state}
    return read_newest(path, read)


def checkpoint_iteration(run_dir: str | Path) -> Optional[int]:
    """The iteration of a run's newest checkpoint, None without one (reads only state.json)."""
    return read_newest(run_dir, lambda _, found: None if found is None
                       else _iteration(found, read_meta(found)))


def load_checkpoint_into(found: str | Path, objects: dict[str, Any]) -> int:
    """Load one checkpoint folder (`RUN/checkpoints/iter_N`, `RUN/snapshots/iter_N`, ...) or the
    newest of a run folder into `objects` (networks and optimisers), exactly; returns its
    iteration."""
    state = read_checkpoint(found, objects)
    load_layer_states(objects, state["modules"], str(state["folder"]))
    return state["iteration"]


def load_objects(run_dir: str | Path, objects: dict[str, Any]) -> int:
    """Load the newest checkpoint of a run into `objects` (networks and optimisers), exactly;
    returns its iteration."""
    if latest_checkpoint(run_dir) is None:
        raise CheckpointError(f"no checkpoint in {Path(run_dir) / CHECKPOINTS}")
    return load_checkpoint_into(run_dir, objects)
