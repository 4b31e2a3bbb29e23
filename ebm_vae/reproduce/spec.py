"""The table specs: a table of the paper as YAML (experiments/tables/*.yaml), validated.

A table file names a base experiment config, overrides for the whole table, for each scale
(`paper`: the paper's protocol, for a GPU; `quick`: a CPU-sized version) and for each run, the
metric, and the paper's value per run where it is known (null where not: the paper's tables were
not recovered, docs/method.md §4). Specs are validated by the same machinery as experiment configs
(`ebm_vae.utils.typed_yaml.build`, `ConfigError`); every run's merged config is validated when the
table is planned (plan.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional

import yaml

from ebm_vae.utils.typed_yaml import ConfigError, build, safe_load

TABLES_DIR = Path(__file__).resolve().parents[2] / "experiments" / "tables"
# metric -> its offline stand-in at a scale with `offline: true` where the Inception weights it
# needs are absent
OFFLINE = {"fid": "cls_fid", "is": "cls_is"}


@dataclass(frozen=True)
class RunSpec:
    """One row of a table: overrides of the table's setting and the paper's value."""
    label: str
    set: List[str] = field(default_factory=list)  # dotted.key=value, as tools/train.py --set
    config: Optional[str] = None  # experiment YAML (relative to the table file); null: the table's
    group: Optional[str] = None  # sweep name (one plot panel per group), e.g. "Langevin steps l"
    x: Optional[float] = None  # the swept value (the plot's x)
    paper: Optional[float] = None  # the paper's value; null where not recovered (never invented)


@dataclass(frozen=True)
class ScaleSpec:
    """How a table is run at one scale."""
    num_samples: int  # generated images (fid/is), test images (recon, completion: 0 = all)
    set: List[str] = field(default_factory=list)  # overrides for every run at this scale
    config: Optional[str] = None  # replaces the table's base config (not a run's own config)
    max_iters: Optional[int] = None  # training iterations per run; null: the config's epochs
    eval_langevin: Literal["sample", "train"] = "sample"  # Langevin steps at evaluation:
    # sample.steps (released test script) or the run's training langevin.steps
    offline: bool = False  # without Inception weights: classifier metrics (cls_fid, cls_is) instead
    reference_images: Optional[int] = None  # fid: N reference images of the train split (null: all)
    classifier_epochs: int = 1  # epochs when the offline classifier has to be trained
    # metrics computed at this scale; null: the table's metric (see `metric_names`)
    metrics: Optional[List[Literal["fid", "is", "cls_fid", "cls_is", "recon", "completion"]]] = None
    seeds: Optional[List[int]] = None  # one run per seed for every row; null: the config's seed
    runs: Optional[List[str]] = None  # labels of the rows run at this scale; null: every row


@dataclass(frozen=True)
class Scales:
    paper: ScaleSpec
    quick: ScaleSpec


@dataclass(frozen=True)
class TableSpec:
    id: str  # "4"; the report is results/table<id>.md
    title: str
    metric: Literal["fid", "is", "recon", "completion"]
    config: str  # base experiment YAML, relative to this file
    runs: List[RunSpec]
    scales: Scales
    task: Literal["generation", "completion"] = "generation"
    set: List[str] = field(default_factory=list)  # overrides for every run (the paper's setting)
    notes: str = ""  # what is known of the paper's table, and what we chose


def table_from_dict(raw: dict, where: str = "table") -> TableSpec:
    """Validate a raw table mapping (config.py machinery: unknown keys, types, required keys)."""
    try:
        spec = build(TableSpec, raw, "")
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from err
    labels = [r.label for r in spec.runs]

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{where}: {msg}")

    need(len(labels) > 0, "'runs' needs at least one run")
    need(len(set(labels)) == len(labels), f"run labels must be unique, got {labels}")
    need(spec.metric not in ("recon", "completion") or (spec.task == "completion") == (
        spec.metric == "completion"), "metric 'completion' goes with task 'completion' (and only it)")
    for r in spec.runs:
        need((r.group is None) == (r.x is None), f"run '{r.label}': give both 'group' and 'x', or neither")
    for name in ("paper", "quick"):
        s = getattr(spec.scales, name)
        need(s.num_samples >= 0, f"scales.{name}.num_samples must be >= 0")
        need(s.max_iters is None or s.max_iters >= 1, f"scales.{name}.max_iters must be >= 1 or null")
        need(s.classifier_epochs >= 1, f"scales.{name}.classifier_epochs must be >= 1")
        need(s.reference_images is None or s.reference_images >= 2,
             f"scales.{name}.reference_images must be >= 2 or null (the whole split)")
        need(not s.offline or spec.metric in OFFLINE,
             f"scales.{name}.offline: only fid and is have offline stand-ins")
        need(spec.metric not in ("fid", "is") or s.num_samples >= 10,
             f"scales.{name}.num_samples must be >= 10 for {spec.metric}")
        if s.metrics is not None:
            need(len(s.metrics) >= 1 and len(set(s.metrics)) == len(s.metrics),
                 f"scales.{name}.metrics must be a non-empty list without repeats")
            need(("completion" in s.metrics) == (spec.task == "completion") and (
                spec.task != "completion" or len(s.metrics) == 1),
                 f"scales.{name}.metrics: 'completion' goes with task 'completion' (and alone)")
        unknown = sorted(set(s.runs or []) - set(labels))
        need(not unknown, f"scales.{name}.runs: no rows labelled {unknown} (have {labels})")
        need(s.runs is None or len(s.runs) >= 1, f"scales.{name}.runs: name at least one row")
        if s.seeds is not None:
            need(len(s.seeds) >= 1 and len(set(s.seeds)) == len(s.seeds),
                 f"scales.{name}.seeds must be a non-empty list of distinct seeds")
    return spec


def load_table(path: str | Path) -> TableSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"table file not found: {path}")
    try:
        raw = safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    return table_from_dict(raw, str(path))


def find_tables(table: str, tables_dir: Path = TABLES_DIR) -> list[Path]:
    """Table files for `--table`: a path, or an id ('4' -> table4*.yaml; '3' -> 3a and 3b)."""
    if table.endswith((".yaml", ".yml")):
        return [Path(table)]
    found = sorted(tables_dir.glob(f"table{table}*.yaml"))
    if not found:
        have = ", ".join(p.stem for p in sorted(tables_dir.glob("table*.yaml")))
        raise ConfigError(f"no table '{table}' in {tables_dir} (have: {have})")
    return found


def metric_names(spec: TableSpec, scale: ScaleSpec, inception: frozenset[str] = frozenset()
                 ) -> list[str]:
    """The metrics computed at `scale`: its `metrics`, else the table's metric, where the
    Inception weights allow it (`inception`: the metrics they allow, see
    `eval.inception.inception_metrics`); at an `offline` scale without them, its classifier
    stand-in (cls_fid / cls_is). The first one is the table's headline value."""
    if scale.metrics is not None:
        return list(scale.metrics)
    offline = scale.offline and spec.metric in OFFLINE and spec.metric not in inception
    return [OFFLINE[spec.metric] if offline else spec.metric]

