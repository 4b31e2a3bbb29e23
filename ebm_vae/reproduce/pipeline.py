"""Reproduce a table: train what is missing (reuse / resume / train), evaluate every run through
the one evaluation path (`ebm_vae.eval.evaluate`), cache the values by protocol, write the report.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, NamedTuple, Optional

from ebm_vae.completion.evaluate import HARMONIC, OURS, EvalRequest, Fills
from ebm_vae.completion.evaluate import evaluate as evaluate_completion
from ebm_vae.completion.train import train_completion
from ebm_vae.training.runs import load_run
from ebm_vae.training.generation import train_generation
from ebm_vae.eval.evaluate import (Prerequisites, Request, Sources, ensure_classifier, evaluate,
                                   prerequisites, training_evaluation)
from ebm_vae.eval.inception import inception_metrics, load_inception
from ebm_vae.reproduce.plan import PlannedRun, plan, run_state
from ebm_vae.reproduce.report import Row, setting, write_report
from ebm_vae.reproduce.spec import ScaleSpec, load_table, metric_names
from ebm_vae.utils.atomic import write_text
from ebm_vae.utils.provenance import code_version, command_line, run_code, short
from ebm_vae.utils.runlock import hold

EVAL_CACHE = "table_eval.json"


def wait_for_run(run_dir: Path) -> contextlib.AbstractContextManager:
    """One trainer per run folder: tables share runs (Tables 4-6 meet at the base setting), so a
    second reproduce process that reaches a run being trained waits for it, then reuses it. The
    lock file lies beside the folder, as the trainer in this process then holds RUN_DIR/.lock
    (ebm_vae.utils.runlock), which refuses rather than waits."""
    return hold(run_dir.parent / f".{run_dir.name}.lock", wait=True)


def train_run(run: PlannedRun, progress: bool = True) -> int:
    """Train, resume or reuse (with the math threads configured before); returns the run's
    iteration count."""
    with wait_for_run(run.run_dir):
        return _train_run(run, progress)


def _train_run(run: PlannedRun, progress: bool) -> int:
    state, it = run_state(run.run_dir, run.target)
    if state == "done":
        return it
    if hasattr(run.cfg, "mask"):
        train_completion(run.cfg, run.run_dir, run.target, resume=state == "resume", progress=progress)
    else:
        train_generation(run.cfg, run.run_dir, run.target, resume=state == "resume",
                         progress=progress, evaluation=training_evaluation)
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
        ref = scale.reference_images if metric == "fid" else None  # only FID's reference is cut
        what = f"{n} samples vs {'the' if ref is None else f'{ref} images of the'} train split"
    return (f"{run.cfg.data.name}, {iteration} iterations, {what}, "
            f"{eval_steps(run.cfg, scale)} Langevin steps at test")


def _read_cache(run_dir: Path) -> dict:
    path = run_dir / EVAL_CACHE
    return json.loads(path.read_text()) if path.is_file() else {}


def cache_key(run: PlannedRun, metric: str, scale: ScaleSpec, iteration: int) -> str:
    """The protocol an evaluation is cached under in <run>/table_eval.json."""
    ref = f"|ref={scale.reference_images}" if metric == "fid" and scale.reference_images else ""
    return (f"{metric}|n={scale.num_samples}{ref}|steps={eval_steps(run.cfg, scale)}"
            f"|iter={iteration}")


def cached_values(run: PlannedRun, metrics: list[str], scale: ScaleSpec, iteration: int,
                  cache: Optional[dict] = None) -> Optional[dict[str, dict[str, float]]]:
    """{metric: its columns} if every metric is cached for this protocol (in `cache`, else in the
    run folder's file), else None."""
    cache = _read_cache(run.run_dir) if cache is None else cache
    keys = {m: cache_key(run, m, scale, iteration) for m in metrics}
    return {m: cache[k] for m, k in keys.items()} if all(k in cache for k in keys.values()) else None


def evaluate_run(run: PlannedRun, metrics: list[str], scale: ScaleSpec, iteration: int,
                 prereq: dict[str, Prerequisites], progress: bool = True
                 ) -> dict[str, dict[str, float]]:
    """{metric: its columns} for one trained run, each cached in the run folder by protocol."""
    cache = _read_cache(run.run_dir)
    missing = [m for m in metrics if cache_key(run, m, scale, iteration) not in cache]
    if missing:
        code = code_version()
        for m, values in _measure(run, missing, scale, prereq, progress).items():
            cache[cache_key(run, m, scale, iteration)] = {**values, "code": code}
        write_text(run.run_dir / EVAL_CACHE, json.dumps(cache, indent=2) + "\n")
    return cached_values(run, metrics, scale, iteration, cache)


def table_values(metric: str, entry: dict) -> dict[str, float]:
    """The report columns (report.COLUMNS) of one `eval.evaluate` entry."""
    if metric in ("fid", "cls_fid"):
        return {k: entry[k] for k in ("revised", "proposals")}
    if metric in ("is", "cls_is"):
        return {"revised": entry["revised"][0], "revised_std": entry["revised"][1],
                "proposals": entry["proposals"][0]}
    if metric == "recon":
        return {"psnr_revised": entry["revised"]["psnr_db"], "psnr_decoded": entry["decoded"]["psnr_db"],
                "mse_revised": entry["revised"]["mse"], "mse_decoded": entry["decoded"]["mse"]}
    raise ValueError(f"no table columns for metric {metric!r}")


def _measure(run: PlannedRun, metrics: list[str], scale: ScaleSpec,
             prereq: dict[str, Prerequisites], progress: bool) -> dict[str, dict[str, float]]:
    steps = eval_steps(run.cfg, scale)
    if metrics == ["completion"]:
        request = EvalRequest(run.cfg.data.root, limit=scale.num_samples or None)
        report = evaluate_completion(run.run_dir, run.run_dir / "eval_table", request,
                                     Fills(run.cfg.seed, steps))
        methods = report["methods"]
        ours, harm = methods[OURS], methods[HARMONIC]
        return {"completion": {
            "psnr_hole": ours["psnr_hole"]["mean"], "ssim_hole": ours["ssim_hole"]["mean"],
            "l1_hole": ours["l1_hole"]["mean"], "psnr_hole_harmonic": harm["psnr_hole"]["mean"]}}
    request = Request(n=scale.num_samples, steps=steps, batch_size=run.cfg.train.num_chains,
                      seed=run.cfg.seed, run_dir=str(run.run_dir))
    results = evaluate(load_run(run.run_dir), metrics, prereq[run.cfg.data.name], request,
                       progress)
    return {m: table_values(m, results[m]) for m in metrics}


def prerequisites_by_dataset(metrics: list[str], runs: list[PlannedRun], scale: ScaleSpec,
                             cache_dir: Path, inception: Optional[str], progress: bool = True
                             ) -> dict[str, Prerequisites]:
    """What the metrics need per dataset, loaded (the offline classifier: trained and cached in
    the folder `cache_dir`/<dataset>; FID's reference statistics: computed once and cached, see
    `ebm_vae.eval.fid_reference`) before any training starts, so nothing fails late."""
    if metrics == ["completion"]:
        return {}
    datasets = sorted({r.cfg.data.name: r.cfg.data.root for r in runs}.items())
    net = load_inception(inception) if {"fid", "is"} & set(metrics) else None
    out = {}
    for name, root in datasets:
        clf = (ensure_classifier(cache_dir / name, name, root, scale.classifier_epochs,
                                 progress) if {"cls_fid", "cls_is"} & set(metrics) else None)
        out[name] = prerequisites(metrics, name, root, reference="train",
                                  sources=Sources(net, classifier=clf),
                                  recon_n=scale.num_samples or None,
                                  reference_n=scale.reference_images, progress=progress)
    return out


class Places(NamedTuple):
    """Where a reproduction works: run folders under `runs_root`, reports in `results_dir`, the
    datasets at `roots` (per dataset) or in `folder` (one folder holding them)."""
    runs_root: Path
    results_dir: Path
    roots: dict[str, str]
    folder: Optional[str] = None


def reproduce(table_path: Path, scale_name: str, places: Places, inception: Optional[str] = None,
              extra: list[str] = (), progress: bool = True, report_only: bool = False
              ) -> list[Path]:
    """Train what is missing, evaluate every run, write the report; with `report_only`, train
    and evaluate nothing: report the finished, evaluated runs and list the others as missing.
    Call `runtime.configure_runtime` first."""
    spec = load_table(table_path)
    scale: ScaleSpec = getattr(spec.scales, scale_name)
    runs = plan(spec, table_path, scale_name, places.runs_root, places.roots, places.folder, extra)
    metrics = metric_names(spec, scale, inception_metrics(inception))
    prereq = {} if report_only else prerequisites_by_dataset(
        metrics, runs, scale, places.runs_root / "classifiers", inception, progress)
    made_by = f"`{command_line()}`, report written by commit {short(code_version())}"
    rows, missing = [], []
    for k, run in enumerate(runs, 1):
        if report_only:
            state, it = run_state(run.run_dir, run.target)
            values = cached_values(run, metrics, scale, it) if state == "done" else None
            if values is None:
                missing.append(f"{run.spec.label} seed {run.seed} ({_state_note(state, it, run)})")
                continue
        else:
            print(f"[table {spec.id}] run {k}/{len(runs)} '{run.spec.label}' seed {run.seed}: "
                  f"{run.run_dir}", flush=True)
            it = train_run(run, progress)
            values = evaluate_run(run, metrics, scale, it, prereq, progress)
        rows.append(Row(run.spec.label, setting(run.spec), values, run.spec.paper,
                        protocol(run, metrics[0], scale, it), run.spec.group, run.spec.x, run.seed,
                        trained_with=run_code(run.run_dir),
                        evaluated_with=_eval_code(values)))
        if not report_only:
            write_report(spec, scale_name, metrics, rows, places.results_dir,
                         made_by)  # partial tables
    return write_report(spec, scale_name, metrics, rows, places.results_dir, made_by, missing)


def _state_note(state: str, it: int, run: PlannedRun) -> str:
    return {"new": "not started", "resume": f"at iteration {it} of {run.target}"}.get(
        state, "trained, not evaluated")


def _eval_code(values: dict[str, dict]) -> str:
    """The commits that computed a run's cached values; 'not recorded' for older caches."""
    codes = dict.fromkeys(short(str(v.get("code", "not recorded"))) for v in values.values())
    return ", ".join(codes)
