#!/usr/bin/env python
"""Compare runs over training: a metric's curve per run, from each run's log.csv.

Writes OUT.csv (columns config, iteration, metric, value) and OUT.png (one panel per metric).
Metrics are log.csv columns (cls_fid_revised, f_data, ebm_weight_norm, ...) or energy_gap
(f(data) - f(revised)); metrics logged at every iteration are thinned to --every.

  python tools/curves.py --run base=runs/mnist_base --run noise=runs/mnist_noise \\
      --metric cls_fid_revised --metric energy_gap --log-scale energy_gap --out results/stability
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ebm_vae.eval.curves import run_curves, write_curves
from ebm_vae.utils.cli import run_tool


def _named(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=RUN_DIR, got {text!r}")
    return name, Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=_named, action="append", required=True,
                        help="NAME=RUN_DIR (repeat for each run)")
    parser.add_argument("--metric", action="append", required=True, help="a log column (repeat)")
    parser.add_argument("--log-scale", action="append", default=[], help="plot log10 |value|")
    parser.add_argument("--every", type=int, default=50, help="thin per-iteration metrics")
    parser.add_argument("--out", type=Path, required=True, help="OUT.csv and OUT.png")
    args = parser.parse_args(argv)
    return run_tool(lambda: compare(args))


def compare(args: argparse.Namespace) -> None:
    """Write the curves' CSV and PNG."""
    rows = run_curves(dict(args.run), args.metric, args.every)
    write_curves(rows, args.out.with_suffix(".csv"), args.out.with_suffix(".png"), args.log_scale)
    print(f"wrote {args.out.with_suffix('.csv')} ({len(rows)} rows) and .png")


if __name__ == "__main__":
    sys.exit(main())
