"""The old single-file checkpoints (one pickle of numpy arrays each) and their conversion to
checkpoint folders. The only reader of those pickles: tools/convert_run.py calls it (and
ebm_vae.eval.classifier.convert_classifier, for the classifier's). Three kinds, each converted
beside the old file, which stays in place:

    RUN/checkpoints/last.ckpt     {"iteration", "modules"}   -> RUN/checkpoints/iter_N/
    RUN/snapshots/iter_N.ckpt     {"iteration", "modules"}   -> RUN/snapshots/iter_N/
    classifier.ckpt               {"dataset", "state", ...}  -> classifier/
"""
from __future__ import annotations

import pickle
from pathlib import Path

from ebm_vae.training.checkpoints import (LEGACY_CHECKPOINT, STATE_FILE, checkpoint_dirs,
                                      write_checkpoint, write_kept)
from ebm_vae.training.states import CheckpointError, to_tensors


def read_pickle(path: str | Path) -> dict:
    """The payload of an old single-file checkpoint (a dict)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found: nothing to convert")
    try:
        with open(path, "rb") as fh:
            payload = pickle.load(fh)
    except Exception as err:  # noqa: BLE001 - unpickling damaged bytes raises nearly anything
        raise CheckpointError(f"{path} is corrupt or not an old-format checkpoint: {err}") from err
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not an old-format checkpoint (a {type(payload).__name__})")
    return payload


def is_run_state(payload: dict) -> bool:
    """Whether an old payload holds networks' states (a run checkpoint or a snapshot)."""
    return "iteration" in payload and isinstance(payload.get("modules"), dict)


def _states(path: Path, payload: dict) -> tuple[int, dict[str, dict]]:
    """(iteration, state dicts as tensors) of an old run checkpoint or snapshot."""
    if not is_run_state(payload):
        raise CheckpointError(f"{path} is not a run checkpoint (no iteration and modules)")
    return int(payload["iteration"]), {n: to_tensors(dict(s)) for n, s in payload["modules"].items()}


def convert_run(run_dir: str | Path) -> Path:
    """Write a run's old `checkpoints/last.ckpt` as the checkpoint folder `checkpoints/iter_N`
    (refused if the run already has one at N or later)."""
    run_dir = Path(run_dir)
    legacy = run_dir / LEGACY_CHECKPOINT
    it, states = _states(legacy, read_pickle(legacy))
    newer = [i for i, _ in checkpoint_dirs(run_dir) if i >= it]
    if newer:
        raise CheckpointError(f"{run_dir} already has a checkpoint at iteration {max(newer)} "
                              f"(the old one is at {it}): nothing to convert")
    return write_checkpoint(run_dir, it, dict.fromkeys(states), states,
                            info={"converted_from": LEGACY_CHECKPOINT})


def convert_snapshot(path: str | Path, payload: dict) -> Path:
    """Write an old snapshot `FOLDER/iter_N.ckpt` (its `payload`) as the folder `FOLDER/iter_N`."""
    path = Path(path)
    it, states = _states(path, payload)
    target = path.parent / f"iter_{it:07d}"
    if (target / STATE_FILE).is_file():
        raise CheckpointError(f"{target} exists already: nothing to convert")
    return write_kept(path.parent, it, dict.fromkeys(states), states,
                      info={"converted_from": path.name})
