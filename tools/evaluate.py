#!/usr/bin/env python
"""Evaluate a trained run: FID and Inception Score (Tables 1-2), the offline classifier metrics
and reconstruction of test images (latent expressiveness). Writes JSON and prints a table.
A thin command line around `ebm_vae.eval.evaluate` (the evaluation path tools/reproduce.py uses).

Metrics (--metrics, comma separated):
  fid      Inception FID vs reference statistics of a real split (computed once per weights and
           --reference-n, cached; needs the Inception weights, see tools/convert_inception.py)
  is       Inception Score, 10 splits (needs the Inception weights with the classifier layer)
  cls_fid  FID in the features of a small classifier trained on the dataset's labels (offline;
           NOT comparable to paper FIDs; needs --train-classifier first)
  cls_is   the Inception Score formula on that classifier's class probabilities (offline; NOT
           comparable to paper IS)
  recon    test images -> encoder -> decoder -> Langevin: per-pixel MSE / PSNR and a grid

  python tools/evaluate.py --stats cifar10 --data-root DIR --reference-n 10000
  python tools/evaluate.py --train-classifier --ckpt runs/mnist
  python tools/evaluate.py --ckpt runs/mnist --metrics cls_fid,recon --n 10000
  python tools/evaluate.py --ckpt runs/mnist --real test --metrics cls_fid   # the real-data floor
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ebm_vae.core.config import Config
from ebm_vae.core.sampling import check_sampling_memory
from ebm_vae.errors import UserError
from ebm_vae.eval.evaluate import (METRIC_LABELS, METRICS, Request, Sources, classifier_path,
                                   evaluate, parse_metrics, prerequisites, real_sets,
                                   sample_file_sets, train_and_save_classifier)
from ebm_vae.eval.fid_reference import write_inception_stats
from ebm_vae.eval.inception import inception_metrics, resolve_weights
from ebm_vae.training.checkpoints import output_place, split_checkpoint
from ebm_vae.training.runs import Run, configure_for_run, load_run
from ebm_vae.utils.atomic import write_text
from ebm_vae.utils.provenance import code_version, command_line
from ebm_vae.utils.cli import add_threads_arg, run_tool
from ebm_vae.utils.runtime import configure_runtime


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_argument_group("modes (default: evaluate --metrics)")
    mode.add_argument("--stats", metavar="DATASET", help="compute (or find cached) the Inception "
                      "reference statistics of DATASET's --reference split (mnist | "
                      "fashion_mnist | cifar10) and exit; fid does this itself when needed")
    mode.add_argument("--train-classifier", action="store_true",
                      help="train the cls_fid classifier (dataset from --ckpt or --dataset) and exit")
    mode.add_argument("--reconstruct", action="store_true", help="shorthand for --metrics recon")
    p.add_argument("--ckpt", metavar="RUN_DIR", help="run folder (config.yaml + a checkpoint or the .pdparams), or one "
                   "checkpoint folder RUN_DIR/checkpoints/iter_N (outputs then go to RUN_DIR, named *_iter_N)")
    p.add_argument("--metrics", help=f"comma list of {', '.join(METRICS)} (default: fid where "
                   "the Inception weights are found, else cls_fid)")
    p.add_argument("--dataset", help="dataset when there is no --ckpt")
    p.add_argument("--data-root", help="dataset folder (default: the run's data.root)")
    src = p.add_argument_group("what to evaluate (default: samples drawn from the run)")
    src.add_argument("--images", metavar="NPZ", help="a sample file of tools/sample.py (keys "
                     "`images`, optional `proposals`)")
    src.add_argument("--real", choices=["train", "test"], help="--n real images of a split (a fixed seeded choice)")
    src.add_argument("--untrained", action="store_true", help="the run's model at initialisation")
    src.add_argument("--ema", action="store_true", help="samples of the checkpoint's moving "
                     "average of the weights (runs trained with train.ema > 0)")
    p.add_argument("--n", type=int, default=50000, help="samples per set (default 50000, as the "
                   "released test script; CPU users: 1000-10000)")
    p.add_argument("--steps", type=int, help="Langevin steps (default: the config's sample.steps)")
    p.add_argument("--batch-size", type=int, help="chains per sampling batch (default train.num_chains)")
    p.add_argument("--reference", choices=["train", "test"], default="train",
                   help="split whose statistics FID compares against (default train)")
    p.add_argument("--reference-n", type=int, help="FID's reference: N images of the split, a "
                   "fixed seeded choice (default: all; the released code used 10000)")
    p.add_argument("--inception", help="converted Inception weights (.pdparams); else "
                   "$EBM_VAE_INCEPTION, the config's eval.inception, or the cache's")
    p.add_argument("--fid-stats", help="Inception reference statistics .npz (default: computed "
                   "once per weights and count, cached); with --stats: the output file")
    p.add_argument("--classifier", help="classifier folder (default RUN_DIR/classifier)")
    p.add_argument("--epochs", type=int, default=1, help="classifier training epochs (default 1)")
    p.add_argument("--z", choices=["mu", "sample"], default="mu", help="recon latent: the encoder "
                   "mean (default) or the reparameterised sample (released code)")
    p.add_argument("--recon-n", type=int, help="test images to reconstruct (default: all)")
    p.add_argument("--out", help="JSON file (default RUN_DIR/eval[_<source>].json)")
    p.add_argument("--seed", type=int, help="seed for sampling (default: the config's seed)")
    p.add_argument("--device", choices=["cpu", "gpu"], help="override the config's device")
    add_threads_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


class UsageError(UserError):
    """Flags that do not fit together."""


def write_json(path: Path, results: dict) -> None:
    """Merge `results` into the JSON at `path` (one entry per metric) and write it atomically."""
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(results)
    write_text(path, json.dumps(merged, indent=2, allow_nan=True) + "\n")


def print_table(results: dict) -> None:
    def fmt(v) -> str:
        if isinstance(v, list):
            return f"{v[0]:.3f} ± {v[1]:.3f}"
        if isinstance(v, dict):
            return f"MSE {v['mse']:.5f} / PSNR {v['psnr_db']:.2f} dB"
        return f"{v:.3f}" if isinstance(v, float) and math.isfinite(v) else str(v)

    skip = {"protocol", "note", "splits", "classifier_test_accuracy", "classifier", "reference_stats",
            "grid", "z", "num_images"}
    for metric, entry in results.items():
        cells = "  ".join(f"{k}: {fmt(v)}" for k, v in entry.items() if k not in skip)
        proto = " ".join(f"{k}={v}" for k, v in entry["protocol"].items() if k != "command")
        print(f"{metric:8s} {METRIC_LABELS[metric]}\n         {cells}\n         [{proto}]")
        if "note" in entry:
            print(f"         ({entry['note']})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_tool(lambda: run(args))


def open_run(args: argparse.Namespace) -> Run | None:
    """The run of --ckpt (or None); a folder that is not a run is a one-line error."""
    if not args.ckpt:
        configure_runtime(args.device or "cpu", args.threads)
        return None
    configure_for_run(args.ckpt, args.device, args.threads)  # UserError if not a run
    return load_run(args.ckpt, untrained=args.untrained, averaged=args.ema)


def run_folder(args: argparse.Namespace) -> Path | None:
    """The run folder of --ckpt (which may name one of its checkpoint folders), or None."""
    return split_checkpoint(args.ckpt)[0] if args.ckpt else None


def check_counts(args: argparse.Namespace) -> None:
    """Refuse counts below 1 (a negative one would silently mean "all but the last N")."""
    for flag in ("recon_n", "reference_n", "batch_size", "steps"):
        value = getattr(args, flag)
        low = 0 if flag == "steps" else 1
        if value is not None and value < low:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= {low}, got {value}")


def run(args: argparse.Namespace) -> int:
    check_counts(args)
    loaded = open_run(args)
    cfg = loaded.cfg if loaded else None
    dataset = args.stats or (cfg.data.name if cfg else args.dataset)
    root = args.data_root or (cfg.data.root if cfg else None)
    if not dataset:
        raise UsageError("say which dataset: --ckpt RUN_DIR or --dataset NAME")
    progress = not args.no_progress
    if args.train_classifier:
        return train_classifier(args, dataset, root, progress)
    if args.stats:
        return write_stats(args, cfg, dataset, root, progress)
    return evaluate_run(args, loaded, dataset, root, progress)


def train_classifier(args: argparse.Namespace, dataset: str, root: str | None,
                     progress: bool) -> int:
    """--train-classifier: train the cls_fid / cls_is classifier and cache it."""
    path = classifier_path(run_folder(args), args.classifier)
    if args.epochs < 1:
        raise UsageError("--epochs must be >= 1")
    clf = train_and_save_classifier(path, dataset, root, args.epochs, progress=progress)
    print(f"classifier for {dataset}: test accuracy {clf.test_accuracy:.4f}; wrote {path}")
    return 0


def write_stats(args: argparse.Namespace, cfg: Config | None, dataset: str, root: str | None,
                progress: bool) -> int:
    """--stats: the Inception reference statistics of the --reference split."""
    out, n = write_inception_stats(dataset, root, args.reference,
                                   args.inception or (cfg.eval.inception if cfg else None),
                                   Path(args.fid_stats) if args.fid_stats else None, progress,
                                   args.reference_n)
    print(f"{out}: Inception pool3 statistics of {n} {dataset} {args.reference} images")
    return 0


def check_request(args: argparse.Namespace, metrics: list[str], loaded: Run | None) -> str:
    """The name of what is evaluated (the protocol's source), after checking the flags fit."""
    if args.n < 10:
        raise UsageError("--n must be >= 10 (IS uses 10 splits; FID needs a covariance)")
    if sum(bool(x) for x in (args.images, args.real, args.untrained, args.ema)) > 1:
        raise UsageError("give at most one of --images, --real, --untrained, --ema")
    if args.out and Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a folder; name the JSON file to write")
    if "recon" in metrics and loaded is None:
        raise UsageError("recon needs a model: --ckpt RUN_DIR")
    if loaded is None and not (args.images or args.real):
        raise UsageError("nothing to evaluate: give --ckpt RUN_DIR, --images NPZ or --real SPLIT")
    if loaded is not None and not (args.images or args.real) and set(metrics) - {"recon"}:
        check_sampling_memory(args.n, loaded.cfg.model)  # before any prerequisite is computed
    return ("file" if args.images else f"real_{args.real}" if args.real else
            "untrained" if args.untrained else "ema" if args.ema else "model")


def evaluate_run(args: argparse.Namespace, loaded: Run | None, dataset: str, root: str | None,
                 progress: bool) -> int:
    """Score --metrics, merge them into the JSON and print the table."""
    cfg = loaded.cfg if loaded else None
    metrics = (["recon"] if args.reconstruct else parse_metrics(args.metrics) if args.metrics
               else default_metrics(args.inception or (cfg.eval.inception if cfg else None)))
    source = check_request(args, metrics, loaded)
    seed = args.seed if args.seed is not None else (cfg.seed if cfg else 0)

    # every prerequisite first, so nothing fails after a long sampling run
    needs_classifier = {"cls_fid", "cls_is"} & set(metrics)
    sources = Sources(args.inception or (cfg.eval.inception if cfg else None), args.fid_stats,
                      classifier_path(run_folder(args), args.classifier)
                      if needs_classifier else None)
    prereq = prerequisites(metrics, dataset, root, reference=args.reference, sources=sources,
                           recon_n=args.recon_n, reference_n=args.reference_n, progress=progress)
    images = None
    if set(metrics) - {"recon"}:
        if args.images:
            images = sample_file_sets(args.images, args.n)
        elif args.real:
            images = real_sets(dataset, root, args.real, args.n)
    grid = None
    if "recon" in metrics:
        folder, suffix = output_place(args.ckpt)
        grid = folder / ("reconstruction" + ("" if source == "model" else f"_{source}")
                         + f"{suffix}.png")
    request = Request(images, source, args.n, args.steps, args.batch_size, seed, args.z, grid,
                      args.ckpt)
    results = evaluate(loaded, metrics, prereq, request, progress)
    for entry in results.values():  # which code and command produced each number
        entry["protocol"].update(code=code_version(), command=command_line())
    out = Path(args.out) if args.out else default_json(args, source)
    write_json(out, results)
    print_table(results)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def default_metrics(inception: str | None) -> list[str]:
    """Without --metrics: the paper's FID where the Inception weights are found, else the
    offline classifier FID (said on stderr, since the two are not comparable)."""
    if "fid" in inception_metrics(inception):
        print(f"scoring fid (Inception FID, weights {resolve_weights(inception)}). Its reference "
              "statistics cover --reference-n images of the split (default: all of it), computed "
              "once and cached; on a CPU that is about 0.25 s per image per thread, so for a quick "
              "small-N score pass e.g. --reference-n 2000, or --metrics cls_fid", file=sys.stderr)
        return ["fid"]
    print("no Inception weights found (tools/convert_inception.py): scoring cls_fid, the offline "
          "classifier FID, NOT comparable with paper FIDs", file=sys.stderr)
    return ["cls_fid"]


def default_json(args: argparse.Namespace, source: str) -> Path:
    name = "eval" if source == "model" else f"eval_{source}"
    if not args.ckpt:
        return Path(f"{name}.json")
    folder, suffix = output_place(args.ckpt)
    return folder / f"{name}{suffix}.json"


if __name__ == "__main__":
    sys.exit(main())
