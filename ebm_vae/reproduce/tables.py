"""The paper's Tables 1-6 as YAML specs: plan the runs, train what is missing, evaluate, report.

A table file (experiments/tables/*.yaml) names a base experiment config, overrides for the whole
table, for each scale (`paper`: the paper's protocol, for a GPU; `quick`: a CPU-sized version) and
for each run, the metric, and the paper's value per run where it is known (null where not: the
paper's tables were not recovered, docs/method.md §4). Specs are validated by the same machinery as
experiment configs (`ebm_vae.core.config._build`, `ConfigError`), and every run's merged config is
validated when the table is planned.

Run folders are named by a hash of the resolved config (data root and device left out), so runs
shared between tables (Tables 4-6 meet at the base setting) are trained once; a finished run is
reused, an interrupted one resumed from its checkpoint.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Literal, Optional

import yaml

from ebm_vae.completion.config import completion_config_from_dict
from ebm_vae.core.config import ConfigError, _build, config_from_dict, load_raw, to_dict

TABLES_DIR = Path(__file__).resolve().parents[2] / "experiments" / "tables"
# training images per dataset, for the length of a full schedule (cmp_facade: the pix2pix split)
TRAIN_SIZES = {"mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000,
               "cmp_facade": 400, "paris_street_view": 14900}
# metric -> its offline stand-in at a scale with `offline: true` (no Inception weights on a CPU)
OFFLINE = {"fid": "cls_fid", "is": "cls_is"}
# metric -> report columns (key, header); the first is the table's value (and the plot's y)
COLUMNS = {
    "fid": [("revised", "FID (revised samples)"), ("proposals", "FID (VAE proposals)")],
    "is": [("revised", "IS (revised samples)"), ("revised_std", "IS std"),
           ("proposals", "IS (VAE proposals)")],
    "cls_fid": [("revised", "classifier FID (revised samples)"),
                ("proposals", "classifier FID (VAE proposals)")],
    "cls_is": [("revised", "classifier IS (revised samples)"), ("revised_std", "std"),
               ("proposals", "classifier IS (VAE proposals)")],
    "recon": [("psnr_revised", "PSNR dB (revised)"), ("psnr_decoded", "PSNR dB (decoded)"),
              ("mse_revised", "MSE (revised)"), ("mse_decoded", "MSE (decoded)")],
    "completion": [("psnr_hole", "PSNR hole dB"), ("ssim_hole", "SSIM hole"), ("l1_hole", "L1 hole"),
                   ("psnr_hole_harmonic", "PSNR hole dB (harmonic baseline)")],
}
PLOTTED = {"revised": "revised", "proposals": "VAE proposals", "psnr_revised": "revised",
           "psnr_decoded": "decoded", "psnr_hole": "ours", "psnr_hole_harmonic": "harmonic"}
EVAL_CACHE = "table_eval.json"


# ---- the spec ---------------------------------------------------------------------------------

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
    offline: bool = False  # classifier metrics in place of Inception ones (cls_fid, cls_is)
    classifier_epochs: int = 1  # epochs when the offline classifier has to be trained


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
        spec = _build(TableSpec, raw, "")
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
        need(not s.offline or spec.metric in OFFLINE,
             f"scales.{name}.offline: only fid and is have offline stand-ins")
        need(spec.metric not in ("fid", "is") or s.num_samples >= 10,
             f"scales.{name}.num_samples must be >= 10 for {spec.metric}")
    return spec


def load_table(path: str | Path) -> TableSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"table file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
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


def metric_name(spec: TableSpec, scale: ScaleSpec) -> str:
    """The metric actually computed at `scale` (cls_fid / cls_is in place of fid / is offline)."""
    return OFFLINE[spec.metric] if scale.offline else spec.metric


# ---- planning ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    config_path: Path
    overrides: list[str]  # in order: table, scale, run, data root
    cfg: Any  # Config or CompletionConfig, validated
    run_dir: Path
    target: int  # training iterations the run must reach


def parse_data_roots(values: list[str]) -> tuple[dict[str, str], Optional[str]]:
    """`--data-root` values: NAME=PATH entries, and at most one folder holding <name>/ subfolders."""
    named, folder = {}, None
    for v in values:
        if "=" in v:
            name, path = v.split("=", 1)
            named[name.strip()] = path
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
    d = to_dict(cfg)
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
    """Resolve and validate every run of a table at a scale; `extra` overrides come last."""
    scale: ScaleSpec = getattr(spec.scales, scale_name)
    build = completion_config_from_dict if spec.task == "completion" else config_from_dict
    here = table_path.parent
    out = []
    for run in spec.runs:
        config_path = Path(os.path.normpath(here / (run.config or scale.config or spec.config)))
        overrides = [*spec.set, *scale.set, *run.set, *extra]
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
        out.append(PlannedRun(run, config_path, overrides, cfg, run_dir,
                              target_iterations(cfg, scale.max_iters)))
    return out


def run_state(run_dir: Path, target: int) -> tuple[Literal["new", "resume", "done"], int]:
    """What a run folder needs: ('new', 0) without a checkpoint, ('resume', it) below `target`,
    ('done', it) at or past it."""
    from ebm_vae.core.runs import checkpoint_iteration

    it = checkpoint_iteration(run_dir)
    if it is None:  # one killed before its first checkpoint (it has a log) restarts from 0
        return ("resume" if (run_dir / "log.csv").exists() else "new"), 0
    return ("done" if it >= target else "resume"), it


def train_command(run: PlannedRun) -> str:
    """The equivalent tools/ command line (for --dry-run)."""
    tool = "tools/complete.py train" if hasattr(run.cfg, "mask") else "tools/train.py"
    sets = " ".join(f"--set '{o}'" for o in run.overrides)
    return f"python {tool} -c {run.config_path} {sets} --out {run.run_dir} --max-iters {run.target}"


def describe(run: PlannedRun) -> str:
    """Resolved config (YAML) and command of one run, for --dry-run."""
    state, it = run_state(run.run_dir, run.target)
    status = {"new": "to train", "resume": f"to resume from iteration {it}",
              "done": f"done ({it} iterations): reused"}[state]
    text = yaml.safe_dump(to_dict(run.cfg), sort_keys=False)
    return (f"== run '{run.spec.label}': {run.run_dir} [{status}; target {run.target} iterations]\n"
            f"   {train_command(run)}\n" + "".join(f"   | {line}\n" for line in text.splitlines()))


# ---- training and evaluation ------------------------------------------------------------------

def train_run(run: PlannedRun, threads: Optional[int], progress: bool = True) -> int:
    """Train, resume or reuse; returns the run's iteration count."""
    state, it = run_state(run.run_dir, run.target)
    if state == "done":
        return it
    if hasattr(run.cfg, "mask"):
        from ebm_vae.completion.model import train_completion

        train_completion(run.cfg, run.run_dir, run.target, resume=state == "resume", progress=progress)
    else:
        from ebm_vae.core.train import train_generation

        train_generation(run.cfg, run.run_dir, run.target, resume=state == "resume",
                         progress=progress, threads=threads)
    return run_state(run.run_dir, run.target)[1]  # below target if the schedule is shorter


def eval_steps(cfg: Any, scale: ScaleSpec) -> int:
    return cfg.langevin.steps if scale.eval_langevin == "train" else cfg.sample.steps


def protocol(run: PlannedRun, metric: str, scale: ScaleSpec, iteration: int) -> str:
    """One line saying how a value was obtained."""
    n = scale.num_samples
    if metric == "recon":
        what = f"{n or 'all'} test images, z = encoder mean"
    elif metric == "completion":
        what = f"{n or 'all'} test images, seeded {run.cfg.mask.kind} holes"
    else:
        what = f"{n} samples vs train split"
    return (f"{run.cfg.data.name}, {iteration} iterations, {what}, "
            f"{eval_steps(run.cfg, scale)} Langevin steps at test, seed {run.cfg.seed}")


def _read_cache(run_dir: Path) -> dict:
    path = run_dir / EVAL_CACHE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_cache(run_dir: Path, cache: dict) -> None:
    tmp = run_dir / f".{EVAL_CACHE}.tmp"
    tmp.write_text(json.dumps(cache, indent=2) + "\n")
    os.replace(tmp, run_dir / EVAL_CACHE)


def evaluate_run(run: PlannedRun, metric: str, scale: ScaleSpec, iteration: int, prereq: dict,
                 progress: bool = True) -> dict[str, float]:
    """The metric's columns for one trained run, cached in the run folder by protocol."""
    key = f"{metric}|n={scale.num_samples}|steps={eval_steps(run.cfg, scale)}|iter={iteration}"
    cache = _read_cache(run.run_dir)
    if key not in cache:
        cache[key] = _measure(run, metric, scale, prereq, progress)
        _write_cache(run.run_dir, cache)
    return cache[key]


def _measure(run: PlannedRun, metric: str, scale: ScaleSpec, prereq: dict, progress: bool
             ) -> dict[str, float]:
    from ebm_vae.core.runs import load_run
    from ebm_vae.core.sampling import ancestral_sample, reconstruct, with_steps
    from ebm_vae.utils.runtime import seed_all

    steps = eval_steps(run.cfg, scale)
    if metric == "completion":
        from ebm_vae.completion.evaluate import evaluate

        report = evaluate(run.run_dir, run.run_dir / "eval_table", run.cfg.data.root, None,
                          scale.num_samples or None, run.cfg.seed, steps)
        methods = report["methods"]
        ours, harm = methods["ours (conditional EBM + cVAE)"], methods["harmonic interpolation"]
        return {"psnr_hole": ours["psnr_hole"]["mean"], "ssim_hole": ours["ssim_hole"]["mean"],
                "l1_hole": ours["l1_hole"]["mean"], "psnr_hole_harmonic": harm["psnr_hole"]["mean"]}
    loaded = load_run(run.run_dir)
    seed_all(run.cfg.seed)
    lv = with_steps(run.cfg.langevin, steps)
    if metric == "recon":
        from ebm_vae.data.datasets import load_split
        from ebm_vae.eval.evaluate import recon_results

        images = load_split(run.cfg.data.name, run.cfg.data.root, "test")[0][:scale.num_samples or None]
        pair = reconstruct(loaded.models, images, lv, batch_size=run.cfg.train.num_chains,
                           progress=progress)
        r = recon_results(pair.proposals, pair.revised, images)
        return {"psnr_revised": r["revised"]["psnr_db"], "psnr_decoded": r["decoded"]["psnr_db"],
                "mse_revised": r["revised"]["mse"], "mse_decoded": r["decoded"]["mse"]}
    pair = ancestral_sample(loaded.models, scale.num_samples, run.cfg.model.latent_dim, lv,
                            run.cfg.train.num_chains, progress)
    sets = {"revised": pair.revised, "proposals": pair.proposals}
    if metric == "cls_fid":
        clf = prereq["classifier"][run.cfg.data.name]
        return {k: clf.fid(v, "train") for k, v in sets.items()}
    if metric == "cls_is":
        from ebm_vae.eval.evaluate import classifier_score

        clf = prereq["classifier"][run.cfg.data.name]
        (mean, std), (prop, _) = classifier_score(clf, pair.revised), classifier_score(clf, pair.proposals)
        return {"revised": mean, "revised_std": std, "proposals": prop}
    from ebm_vae.eval.evaluate import inception_results

    ref = prereq["fid_stats"].get(run.cfg.data.name) if metric == "fid" else None
    res = inception_results(prereq["inception"], sets, ref, metric == "fid", metric == "is", 50, progress)
    if metric == "fid":
        return {k: res["fid"][k] for k in sets}
    return {"revised": res["is"]["revised"][0], "revised_std": res["is"]["revised"][1],
            "proposals": res["is"]["proposals"][0]}


def prerequisites(metric: str, runs: list[PlannedRun], scale: ScaleSpec, cache_dir: Path,
                  inception: Optional[str], progress: bool = True) -> dict:
    """What the metric needs, loaded (or, for the offline classifier, trained and cached in
    `cache_dir`/<dataset>.ckpt) before any training starts, so nothing fails late."""
    datasets = sorted({r.cfg.data.name: r.cfg.data.root for r in runs}.items())
    if metric in ("cls_fid", "cls_is"):
        from ebm_vae.eval.evaluate import ensure_classifier

        return {"classifier": {name: ensure_classifier(cache_dir / f"{name}.ckpt", name, root,
                                                       scale.classifier_epochs, progress)
                               for name, root in datasets}}
    if metric in ("fid", "is"):
        from ebm_vae.eval.evaluate import default_inception_stats
        from ebm_vae.eval.inception import load_inception
        from ebm_vae.eval.metrics import FeatureStats

        prereq: dict = {"inception": load_inception(inception), "fid_stats": {}}
        for name, _ in datasets if metric == "fid" else []:
            path = default_inception_stats(name, "train")
            if not path.is_file():
                raise FileNotFoundError(f"no Inception statistics at {path}: run `python tools/"
                                        f"evaluate.py --stats {name} --data-root DIR` first")
            prereq["fid_stats"][name] = FeatureStats.load(path)[0]
        return prereq
    return {}


# ---- the report -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One reported run: our values (COLUMNS of the metric), the paper's value, setting, protocol."""
    label: str
    setting: str
    values: dict
    paper: Optional[float]
    protocol: str
    group: Optional[str] = None
    x: Optional[float] = None


def setting(run: RunSpec) -> str:
    return ", ".join(run.set) if run.set else "base setting"


def _fmt(v: Any) -> str:
    if v is None:
        return "not recovered"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


METRIC_NOTES = {
    "cls_fid": "Offline stand-in for FID: classifier-feature FID (ebm_vae/classifier.py). NOT "
               "comparable to the paper's Inception FID; compare the rows with each other.",
    "cls_is": "Offline stand-in for the Inception Score: the same formula on the small MNIST-style "
              "classifier's 10 classes (at most 10). NOT comparable to the paper's IS; compare the "
              "rows with each other.",
    "fid": "FID with the pytorch-fid Inception port vs the whole training split (lower is better).",
    "is": "Inception Score, 10 splits (higher is better).",
    "recon": "Test images -> encoder mean -> decoder -> Langevin; PSNR on [0, 1] (higher is better).",
    "completion": "Hole-only PSNR / SSIM / L1 on the test split (our design, README_completion).",
}


def render_markdown(spec: TableSpec, scale_name: str, metric: str, rows: list[Row]) -> str:
    cols = COLUMNS[metric]
    head = ["run", "setting", *[h for _, h in cols], f"paper ({spec.metric})", "protocol"]
    lines = [f"# Table {spec.id}: {spec.title}", "",
             f"Scale `{scale_name}`; metric `{metric}`. {METRIC_NOTES[metric]}", ""]
    if spec.notes:
        lines += [spec.notes.strip(), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.label, r.setting, *[_fmt(r.values.get(k)) for k, _ in cols], _fmt(r.paper), r.protocol]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render_csv(metric: str, rows: list[Row]) -> str:
    keys = [k for k, _ in COLUMNS[metric]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "group", "x", "setting", "metric", *keys, "paper", "protocol"])
    for r in rows:
        w.writerow([r.label, r.group or "", "" if r.x is None else r.x, r.setting, metric,
                    *[r.values.get(k, "") for k in keys], "" if r.paper is None else r.paper, r.protocol])
    return buf.getvalue()


def plot_panels(metric: str, rows: list[Row]) -> list[tuple[str, dict]]:
    """One panel per swept group: the plotted columns (and the paper's values, if any) vs x."""
    panels = []
    for group in dict.fromkeys(r.group for r in rows if r.group is not None):
        pts = sorted((r for r in rows if r.group == group), key=lambda r: r.x)
        series = {PLOTTED[k]: ([r.x for r in pts], [float(r.values.get(k, math.nan)) for r in pts])
                  for k, _ in COLUMNS[metric] if k in PLOTTED}
        known = [r for r in pts if r.paper is not None]
        if known:
            series["paper"] = ([r.x for r in known], [r.paper for r in known])
        panels.append((f"{metric} vs {group}", series))
    return panels


def write_report(spec: TableSpec, scale_name: str, metric: str, rows: list[Row], out_dir: Path
                 ) -> list[Path]:
    """results/table<id>.md and .csv, and table<id>.png for sweeps; returns the paths written."""
    from ebm_vae.utils.images import save_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"table{spec.id}"
    written = []
    for suffix, text in ((".md", render_markdown(spec, scale_name, metric, rows)),
                         (".csv", render_csv(metric, rows))):
        path = stem.with_suffix(suffix)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(path)
    panels = plot_panels(metric, rows)
    if panels:
        save_plots(stem.with_suffix(".png"), panels, xlabel="swept value")
        written.append(stem.with_suffix(".png"))
    return written


def reproduce(table_path: Path, scale_name: str, runs_root: Path, results_dir: Path,
              roots: dict[str, str], folder: Optional[str], threads: Optional[int] = None,
              inception: Optional[str] = None, extra: list[str] = (), progress: bool = True
              ) -> list[Path]:
    """Train what is missing, evaluate every run, write the report. Call
    `runtime.configure_runtime` first."""
    spec = load_table(table_path)
    scale: ScaleSpec = getattr(spec.scales, scale_name)
    runs = plan(spec, table_path, scale_name, runs_root, roots, folder, extra)
    metric = metric_name(spec, scale)
    prereq = prerequisites(metric, runs, scale, runs_root / "classifiers", inception, progress)
    rows = []
    for k, run in enumerate(runs, 1):
        print(f"[table {spec.id}] run {k}/{len(runs)} '{run.spec.label}': {run.run_dir}", flush=True)
        it = train_run(run, threads, progress)
        values = evaluate_run(run, metric, scale, it, prereq, progress)
        rows.append(Row(run.spec.label, setting(run.spec), values, run.spec.paper,
                        protocol(run, metric, scale, it), run.spec.group, run.spec.x))
        write_report(spec, scale_name, metric, rows, results_dir)  # partial tables along the way
    return write_report(spec, scale_name, metric, rows, results_dir)

