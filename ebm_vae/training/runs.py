"""Run folders: the architecture a run's config builds, and loading a trained run (a checkpoint,
or shipped weights) for sampling and evaluation."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple, Optional

import paddle
import yaml

from ebm_vae.core.config import Config, load_config
from ebm_vae.core.models import Models, build_models
from ebm_vae.training.checkpoints import (CHECKPOINTS, chosen_checkpoint, load_tensor_file,
                                      read_checkpoint, read_meta, read_newest, split_checkpoint,
                                      tensor_bytes)
from ebm_vae.core.ema import PREFIX
from ebm_vae.training.states import CheckpointError, check_finite, load_layer_states, tensor_shape
from ebm_vae.errors import UserError
from ebm_vae.utils.atomic import write_bytes, write_text
from ebm_vae.utils.runtime import configure_runtime, seed_all, set_device

NETWORKS = ("ebm", "encoder", "decoder")


class RunNotFoundError(UserError, FileNotFoundError):
    """A folder is not a run folder (no config.yaml) or holds no weights."""



# ---------------------------------------------------------------------------------------------
# architectures and loading a trained run

def model_shapes(model_cfg: Any, build: Any = build_models) -> dict[str, dict[str, list[int]]]:
    """{"ebm": {tensor: shape}, ...} of the networks a model config describes (built lazily:
    no parameter memory, no random numbers drawn)."""
    with paddle.LazyGuard():
        models = build(model_cfg)
    return {name: {k: tensor_shape(v) for k, v in layer.state_dict().items()}
            for name, layer in models._asdict().items()}


class Run(NamedTuple):
    cfg: Config
    models: Models
    iteration: Optional[int]  # 0 for an untrained model; None for bare weights of unknown age
    missing: tuple[str, ...] = ()  # networks the weights left out (at their seeded initialisation)


WEIGHTS_INFO = "weights.json"  # beside exported weights: {"iteration": N}
SAMPLER = ("ebm", "decoder")  # what ancestral sampling needs: shipped weights may leave out q_phi


def _weights_info(run_dir: Path) -> dict:
    """The record beside exported weights, {"iteration": N[, "ema": true]} ({} when there is none)."""
    path = run_dir / WEIGHTS_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
        return {**info, "iteration": int(info["iteration"])}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is corrupt: {err}") from err


def _bare_weights(run_dir: Path) -> list[str]:
    """The networks shipped beside config.yaml ([] unless at least the sampler's are there)."""
    found = [n for n in NETWORKS if (run_dir / f"{n}.pdparams").is_file()]
    return found if set(SAMPLER) <= set(found) else []


def _run_config(path: str | Path) -> Path:
    """The config.yaml of the run folder `path` is (or holds the checkpoint folder `path` names)."""
    folder = split_checkpoint(path)[0]
    if not (folder / "config.yaml").is_file():
        raise RunNotFoundError(f"{folder} is not a run folder: {folder / 'config.yaml'} not found")
    return folder / "config.yaml"


def load_run(run_dir: str | Path, device: Optional[str] = None, untrained: bool = False,
             averaged: bool = False) -> Run:
    """Config and networks of a run folder: `config.yaml` plus its newest checkpoint folder (or
    `ebm/encoder/decoder.pdparams` beside the config: shipped weights, which may leave out the
    encoder, see `Run.missing`); `run_dir` may also name one checkpoint folder,
    `RUN/checkpoints/iter_N` or `RUN/checkpoints/best`, to load that one. Returns a `Run(cfg,
    models, iteration, missing)`; `models.ebm`, `models.encoder`, `models.decoder` are Paddle
    layers in eval mode. `device` ('cpu' or 'gpu'): select it first (default: leave Paddle's
    current device and threads as they are; the tools call `configure_for_run` first).
    `untrained=True`: the architecture at its seeded initialisation; `averaged=True`: the
    checkpoint's moving average of the weights (runs trained with train.ema > 0)."""
    if device is not None:
        set_device(device)
    run_folder = chosen_checkpoint(run_dir)[0]  # an incomplete or old-format checkpoint: refused
    cfg = load_config(_run_config(run_folder))
    seed_all(cfg.seed)
    models = build_models(cfg.model)
    iteration: Optional[int] = 0
    missing: tuple[str, ...] = ()
    if not untrained:
        iteration, missing = load_networks(run_dir, models, averaged)
    for layer in models:
        layer.eval()  # no dropout; batch norm as configured (bn_batch_stats keeps batch statistics)
    return Run(cfg, models, iteration, missing)


def configure_for_run(path: str | Path, device: Optional[str] = None,
                      threads: Optional[int] = None) -> None:
    """What the tools do before `load_run`: select `device` (default: the run's config's) and the
    CPU settings (`threads` math threads; default `runtime.default_threads()`)."""
    configure_runtime(device or load_config(_run_config(path)).device, threads)


def read_networks(path: str | Path, averaged: bool = False
                  ) -> tuple[dict[str, dict], Optional[int]]:
    """The three networks' state dicts and their iteration (None: unknown) from a run folder
    (its newest checkpoint, chosen again if a trainer removes it meanwhile), one checkpoint
    folder, or shipped weights beside a config.yaml (which may leave out the encoder: then
    its state is absent). `averaged`: the checkpoint's weight average
    (`ema_*.pdparams`) in their place. Weights that are not finite are refused (NonFiniteWeights)."""
    states, iteration = read_newest(path, lambda run_dir, found: _read_networks(run_dir, found,
                                                                                averaged))
    for name in states:  # weights that training let diverge are never used (nor exported)
        check_finite(states[name], name, f"so {path} cannot be used: take an earlier checkpoint")
    return states, iteration


def _read_networks(run_dir: Path, found: Optional[Path], averaged: bool
                   ) -> tuple[dict[str, dict], Optional[int]]:
    if found is not None:
        names = [(PREFIX if averaged else "") + n for n in NETWORKS]
        if averaged and names[0] not in read_meta(found)["files"]:
            raise CheckpointError(f"{found} holds no weight average (the run's train.ema was 0)")
        state = read_checkpoint(found, names)
        return dict(zip(NETWORKS, (state["modules"][n] for n in names))), state["iteration"]
    if averaged:
        ema = _weights_info(run_dir).get("ema")
        already = " (already an average, says weights.json)" if ema else ""
        raise CheckpointError(f"{run_dir} holds exported weights{already}, not a checkpoint: "
                              "load them without --ema; the weight average is read from a run "
                              "or checkpoint folder")
    shipped = _bare_weights(run_dir)
    if shipped:
        return ({n: load_tensor_file(run_dir / f"{n}.pdparams") for n in shipped},
                _weights_info(run_dir).get("iteration"))
    raise RunNotFoundError(
        f"{run_dir} holds no weights: no checkpoint in {run_dir / CHECKPOINTS} and no "
        f"{', '.join(n + '.pdparams' for n in SAMPLER)} beside config.yaml")


def load_networks(path: str | Path, models: Models, averaged: bool = False
                  ) -> tuple[Optional[int], tuple[str, ...]]:
    """Load the networks found at `path` (see `read_networks`) into `models`, exactly (the
    architectures must match); returns their iteration and the networks `path` left out
    (kept as they are in `models`)."""
    states, iteration = read_networks(path, averaged)
    load_layer_states({n: m for n, m in models._asdict().items() if n in states}, states,
                      str(path))
    return iteration, tuple(n for n in NETWORKS if n not in states)


LOCAL_PATHS = (("data", "root"), ("eval", "classifier"), ("eval", "inception"))


def portable_config(text: str) -> str:
    """A run's config.yaml with the paths of the machine it ran on (data.root, eval.classifier,
    eval.inception) set to null, for a folder that travels without them."""
    cfg = yaml.safe_load(text)
    for section, key in LOCAL_PATHS:
        if isinstance(cfg.get(section), dict) and key in cfg[section]:
            cfg[section][key] = None
    return yaml.safe_dump(cfg, sort_keys=False)


def export_weights(run_dir: str | Path, out_dir: str | Path, averaged: bool = False,
                   sampler_only: bool = False) -> Path:
    """Write `out_dir/config.yaml`, the three networks' `.pdparams` and `weights.json` (the
    iteration) from a run's newest checkpoint, or from the checkpoint folder
    `run_dir` names: a folder `load_run` and tools/sample.py load, with no optimiser states,
    no data and no paths of this machine (`portable_config`). `averaged`: export the weight average (`ema_*.pdparams`, train.ema > 0) instead.
    `sampler_only`: the EBM and decoder alone (no encoder: enough to sample, not to reconstruct;
    `--init` from them starts a fresh encoder)."""
    path, (run_dir, found), out_dir = run_dir, chosen_checkpoint(run_dir), Path(out_dir)
    if found is None:
        raise CheckpointError(f"no checkpoint in {run_dir / CHECKPOINTS}")
    states, iteration = read_networks(path, averaged)
    for name in SAMPLER if sampler_only else NETWORKS:
        write_bytes(out_dir / f"{name}.pdparams", tensor_bytes(states[name]))
    info = {"iteration": iteration, **({"ema": True} if averaged else {})}
    write_text(out_dir / WEIGHTS_INFO, json.dumps(info) + "\n")
    write_text(out_dir / "config.yaml", portable_config((run_dir / "config.yaml").read_text()))
    return out_dir
