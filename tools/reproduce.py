#!/usr/bin/env python
"""Reproduce one of the paper's Tables 1-6 from its YAML spec (experiments/tables/): train the runs
that are missing (finished runs are reused, interrupted ones resumed), evaluate them, and write
results/table<id>.md and .csv (our value beside the paper's, where known) and, for a sweep, a PNG.

Scales: `paper` = the paper's protocol (full schedules, Inception FID / IS on 50,000 samples: a GPU
and the Inception weights); `quick` = a CPU-sized version (short runs, 1,000 samples). The quick
scale uses the paper's Inception metric wherever the weights for it are found (--inception,
$EBM_VAE_INCEPTION or the cache; see tools/convert_inception.py) and otherwise the offline classifier
metric cls_fid / cls_is, named as such in the report (NOT comparable with the paper).

  python tools/reproduce.py --table 6 --scale quick --data-root mnist=/data/mnist --threads 1
  python tools/reproduce.py --table 4 --dry-run                 # resolved configs and commands
  python tools/reproduce.py --table 1 --scale paper --data-root /data --inception incep.pdparams
  python tools/reproduce.py --table 3 --scale quick --data-root cmp_facade=DIR  # 3a, 3b, 3c
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ebm_vae.eval.inception import inception_metrics
from ebm_vae.reproduce.pipeline import Places, reproduce
from ebm_vae.reproduce.plan import DATASET_NAMES, describe, parse_data_roots, plan
from ebm_vae.reproduce.spec import find_tables, load_table, metric_names
from ebm_vae.utils.cli import add_threads_arg, run_tool
from ebm_vae.utils.runtime import configure_runtime


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", required=True,
                   help="table id (1, 2, 3 = 3a + 3b + 3c, 3a, 3b, 3c, 4, 5, 6) or a table YAML file")
    p.add_argument("--scale", choices=["paper", "quick"], default="paper", help="default paper")
    p.add_argument("--dry-run", action="store_true", help="print every run's resolved config and "
                   "command, the paper's value, and whether it would be trained, resumed or reused; "
                   "train nothing")
    p.add_argument("--data-root", action="append", default=[], metavar="NAME=PATH|DIR",
                   help="dataset folder per dataset (NAME=PATH, NAME one of "
                   f"{', '.join(DATASET_NAMES)}; repeatable) or one folder holding <name>/ "
                   "subfolders; "
                   "default: the configs' data.root (null: Paddle's download)")
    p.add_argument("--runs", default="runs/tables", help="root of the run folders (default "
                   "runs/tables; runs go to <root>/<scale>/<config>-<hash>, classifiers to "
                   "<root>/classifiers)")
    p.add_argument("--results", default="results", help="report folder (default results)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for every run (applied last; changes the run folders)")
    p.add_argument("--inception", help="FID Inception weights (.pdparams); else "
                   "$EBM_VAE_INCEPTION, else the cache's (tools/convert_inception.py)")
    p.add_argument("--device", choices=["cpu", "gpu"], help="device (default: gpu at the paper "
                   "scale, cpu at the quick scale)")
    p.add_argument("--report-only", action="store_true", help="train and evaluate nothing: "
                   "write the report from the runs already finished and evaluated, and list the "
                   "missing ones in it (e.g. while other processes are still training)")
    add_threads_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_tool(lambda: run(args), "finished runs and evaluations are "
                    "kept; the same command continues from them")


def dry_run(args: argparse.Namespace, paths: list[Path], roots: dict[str, str], folder: str | None,
            extra: list[str]) -> None:
    """Print every run's resolved config and command; train nothing."""
    for path in paths:
        spec = load_table(path)
        runs = plan(spec, path, args.scale, Path(args.runs), roots, folder, extra)
        metrics = metric_names(spec, getattr(spec.scales, args.scale),
                               inception_metrics(args.inception))
        note = "" if metrics == [spec.metric] else (
            f" (the paper's metric is {spec.metric}; classifier metrics are NOT comparable)")
        print(f"# {path} ({args.scale} scale): {len(runs)} runs; metrics "
              f"{', '.join(metrics)}{note}")
        for run in runs:
            print(describe(run, spec.metric))


def run(args: argparse.Namespace) -> None:
    """Reproduce the tables (or describe their runs with --dry-run)."""
    roots, folder = parse_data_roots(args.data_root)
    paths = find_tables(args.table)
    device = args.device or ("gpu" if args.scale == "paper" else "cpu")
    extra = [f"device={device}", *args.set]
    if args.dry_run:
        dry_run(args, paths, roots, folder, extra)
        return
    configure_runtime(device, args.threads)  # before any Paddle computation
    for path in paths:
        places = Places(Path(args.runs), Path(args.results), roots, folder)
        written = reproduce(path, args.scale, places, args.inception, extra, not args.no_progress,
                            args.report_only)
        print("wrote " + ", ".join(map(str, written)))

if __name__ == "__main__":
    sys.exit(main())
