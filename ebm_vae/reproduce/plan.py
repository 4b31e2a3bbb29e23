"""Planned runs of a table: resolved and validated configs, run folders named by a hash of the
config, and each folder's state (new, to resume, done) for --dry-run and for training.

Run folders are named by a hash of the resolved config (data root and device left out), so runs
shared between tables (Tables 4-6 meet at the base setting) are trained once; a finished run is
reused, an interrupted one resumed from its checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from ebm_vae.completion.config import completion_config_from_dict
from ebm_vae.core.config import config_from_dict
from ebm_vae.training.checkpoints import checkpoint_iteration
from ebm_vae.reproduce.spec import RunSpec, ScaleSpec, TableSpec
from ebm_vae.utils.typed_yaml import ConfigError, load_raw

# training images per dataset, for the length of a full schedule (cmp_facade: the pix2pix split);
# also the dataset names --data-root NAME=PATH accepts
TRAIN_SIZES = {"mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000,
               "cmp_facade": 400, "paris_street_view": 14900}
DATASET_NAMES = tuple(TRAIN_SIZES)


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    config_path: Path
    overrides: list[str]  # in order: table, scale, run, data root
    cfg: Any  # Config or CompletionConfig, validated
    run_dir: Path
    target: int  # training iterations the run must reach
    seed: int  # the run's seed (one run per row and seed when the scale lists seeds)


def parse_data_roots(values: list[str]) -> tuple[dict[str, str], Optional[str]]:
    """`--data-root` values: NAME=PATH entries (NAME one of DATASET_NAMES), and at most one
    folder holding <name>/ subfolders."""
    named, folder = {}, None
    for v in values:
        if "=" in v:
            name, path = v.split("=", 1)
            name = name.strip()
            if name not in DATASET_NAMES:
                raise ConfigError(f"--data-root {v}: unknown dataset '{name}'; known: "
                                  f"{', '.join(DATASET_NAMES)}")
            if not path:
                raise ConfigError(f"--data-root {v}: no folder after '='")
            named[name] = path
        elif folder is not None:
            raise ConfigError(f"--data-root: two folders given ({folder}, {v}); use NAME=PATH")
        else:
            folder = v
    return named, folder


def data_root(name: str, roots: dict[str, str], folder: Optional[str]) -> Optional[str]:
    """The data folder of dataset `name`: NAME=PATH, else <folder>/<name>, else None (the
    config's data.root, or Paddle's download)."""
    if name in roots:
        return roots[name]
    if folder is not None:
        path = Path(folder) / name
        if not path.is_dir():
            raise ConfigError(f"--data-root {folder}: no folder {path} for dataset {name}; give "
                              f"--data-root {name}=PATH")
        return str(path)
    return None


def config_hash(cfg: Any) -> str:
    """Short hash of a resolved config without data.root and device (so a run is found again on
    another machine or device)."""
    d = asdict(cfg)
    d["data"] = {k: v for k, v in d["data"].items() if k != "root"}
    d.pop("device", None)
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def target_iterations(cfg: Any, max_iters: Optional[int]) -> int:
    """Iterations of the config's full schedule (epochs x batches), capped by `max_iters`."""
    n = TRAIN_SIZES[cfg.data.name]
    n = min(n, cfg.data.limit) if cfg.data.limit else n
    full = math.ceil(n / cfg.train.batch_size) * cfg.train.epochs
    return full if max_iters is None else min(full, max_iters)


def plan(spec: TableSpec, table_path: Path, scale_name: str, runs_root: Path,
         roots: dict[str, str] | None = None, folder: Optional[str] = None,
         extra: list[str] = ()) -> list[PlannedRun]:
    """Resolve and validate every run of a table at a scale, one per row (those the scale names)
    and seed (rows in table order, seeds within a row); `extra` overrides come last."""
    scale: ScaleSpec = getattr(spec.scales, scale_name)
    seeds = [[f"seed={s}"] for s in scale.seeds] if scale.seeds is not None else [[]]
    rows = [r for r in spec.runs if scale.runs is None or r.label in scale.runs]
    return [_plan_run(spec, run, table_path, scale_name, runs_root, roots, folder,
                      [*seed, *extra]) for run in rows for seed in seeds]


def last_wins(overrides: list[str]) -> list[str]:
    """The overrides with each key kept once, at its last setting (the one `load_raw` would
    apply last), so a row's value replaces the table's instead of following it."""
    seen, out = set(), []
    for o in reversed(overrides):
        key = o.split("=", 1)[0].strip()
        if key not in seen:
            seen.add(key)
            out.append(o)
    return out[::-1]


def _plan_run(spec: TableSpec, run: RunSpec, table_path: Path, scale_name: str, runs_root: Path,
              roots: dict[str, str] | None, folder: Optional[str], extra: list[str]) -> PlannedRun:
    scale: ScaleSpec = getattr(spec.scales, scale_name)
    build = completion_config_from_dict if spec.task == "completion" else config_from_dict
    here = table_path.parent
    config_path = Path(os.path.normpath(here / (run.config or scale.config or spec.config)))
    overrides = last_wins([*spec.set, *scale.set, *run.set, *extra])
    raw = load_raw(config_path, overrides)
    name = raw.get("data", {}).get("name") if isinstance(raw.get("data"), dict) else None
    root = data_root(name, roots or {}, folder) if name else None
    if root is not None:
        overrides.append(f"data.root={root}")
        raw["data"]["root"] = root
    try:
        cfg = build(raw)
    except ConfigError as err:
        raise ConfigError(f"{table_path} run '{run.label}' ({scale_name}): {err}") from err
    run_dir = runs_root / scale_name / f"{config_path.stem}-{config_hash(cfg)}"
    return PlannedRun(run, config_path, overrides, cfg, run_dir,
                      target_iterations(cfg, scale.max_iters), cfg.seed)


def run_state(run_dir: Path, target: int) -> tuple[Literal["new", "resume", "done"], int]:
    """What a run folder needs: ('new', 0) without a checkpoint, ('resume', it) below `target`,
    ('done', it) at or past it."""
    it = checkpoint_iteration(run_dir)
    if it is None:  # one killed before its first checkpoint (it has a log) restarts from 0
        return ("resume" if (run_dir / "log.csv").exists() else "new"), 0
    return ("done" if it >= target else "resume"), it


def train_command(run: PlannedRun) -> str:
    """The equivalent tools/ command line (for --dry-run)."""
    tool = "tools/complete.py train" if hasattr(run.cfg, "mask") else "tools/train.py"
    sets = " ".join(f"--set '{o}'" for o in run.overrides)
    return f"python {tool} -c {run.config_path} {sets} --out {run.run_dir} --max-iters {run.target}"


def paper_value(run: PlannedRun, metric: str) -> str:
    """The paper's value of a run, as --dry-run shows it beside the run."""
    return f"paper {metric}: " + ("not recovered" if run.spec.paper is None else f"{run.spec.paper:g}")


def describe(run: PlannedRun, metric: Optional[str] = None) -> str:
    """Resolved config (YAML) and command of one run, for --dry-run; with `metric` (the table's),
    the paper's value beside the run."""
    state, it = run_state(run.run_dir, run.target)
    status = {"new": "to train", "resume": f"to resume from iteration {it}",
              "done": f"done ({it} iterations): reused"}[state]
    paper = f" ({paper_value(run, metric)})" if metric else ""
    text = yaml.safe_dump(asdict(run.cfg), sort_keys=False)
    return (f"== run '{run.spec.label}', seed {run.seed}{paper}: {run.run_dir} [{status}; target {run.target} "
            f"iterations]\n   {train_command(run)}\n"
            + "".join(f"   | {line}\n" for line in text.splitlines()))
