#!/usr/bin/env python
"""Evaluate a trained run: FID and Inception Score (Tables 1-2), an offline classifier-feature FID,
and reconstruction of test images (latent expressiveness). Writes JSON and prints a table.

Metrics (--metrics, comma separated):
  fid      Inception FID vs reference statistics (--stats first; needs the Inception weights)
  is       Inception Score, 10 splits (needs the Inception weights)
  cls_fid  FID in the features of a small classifier trained on the dataset's labels (offline;
           NOT comparable to paper FIDs; needs --train-classifier first)
  recon    test images -> encoder -> decoder -> Langevin: per-pixel MSE / PSNR and a grid

  python tools/evaluate.py --stats cifar10 --data-root DIR --inception inception_fid.pdparams
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

import numpy as np

METRICS = ("fid", "is", "cls_fid", "recon")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_argument_group("modes (default: evaluate --metrics)")
    mode.add_argument("--stats", metavar="DATASET", help="write Inception reference statistics of "
                      "DATASET's --reference split (mnist | fashion_mnist | cifar10) and exit")
    mode.add_argument("--train-classifier", action="store_true",
                      help="train the cls_fid classifier (dataset from --ckpt or --dataset) and exit")
    mode.add_argument("--reconstruct", action="store_true", help="shorthand for --metrics recon")
    p.add_argument("--ckpt", metavar="RUN_DIR", help="run folder (config.yaml + a checkpoint or the .pdparams)")
    p.add_argument("--metrics", default="cls_fid", help=f"comma list of {', '.join(METRICS)} "
                   "(default cls_fid)")
    p.add_argument("--dataset", help="dataset when there is no --ckpt")
    p.add_argument("--data-root", help="dataset folder (default: the run's data.root)")
    src = p.add_argument_group("what to evaluate (default: samples drawn from the run)")
    src.add_argument("--images", metavar="NPZ", help="a sample file of tools/sample.py (keys "
                     "`images`, optional `proposals`)")
    src.add_argument("--real", choices=["train", "test"], help="the first --n real images of a split")
    src.add_argument("--untrained", action="store_true", help="the run's model at initialisation")
    p.add_argument("--n", type=int, default=50000, help="samples per set (default 50000, as the "
                   "released test script; CPU users: 1000-10000)")
    p.add_argument("--steps", type=int, help="Langevin steps (default: the config's sample.steps)")
    p.add_argument("--batch-size", type=int, help="chains per sampling batch (default train.num_chains)")
    p.add_argument("--reference", choices=["train", "test"], default="train",
                   help="split whose statistics FID compares against (default train)")
    p.add_argument("--inception", help="converted Inception weights (.pdparams); else "
                   "$EBM_VAE_INCEPTION or the config's eval.inception")
    p.add_argument("--fid-stats", help="Inception reference statistics .npz (default "
                   "stats/inception_<dataset>_<reference>.npz); with --stats: the output file")
    p.add_argument("--classifier", help="classifier checkpoint (default RUN_DIR/classifier.ckpt)")
    p.add_argument("--epochs", type=int, default=1, help="classifier training epochs (default 1)")
    p.add_argument("--z", choices=["mu", "sample"], default="mu", help="recon latent: the encoder "
                   "mean (default) or the reparameterised sample (released code)")
    p.add_argument("--recon-n", type=int, help="test images to reconstruct (default: all)")
    p.add_argument("--out", help="JSON file (default RUN_DIR/eval[_<source>].json)")
    p.add_argument("--seed", type=int, help="seed for sampling (default: the config's seed)")
    p.add_argument("--device", choices=["cpu", "gpu"], help="override the config's device")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


class UsageError(ValueError):
    """Flags that do not fit together."""


def write_json(path: Path, results: dict) -> None:
    """Merge `results` into the JSON at `path` (one entry per metric) and write it atomically."""
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(merged, indent=2, allow_nan=True) + "\n")
    tmp.replace(path)


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
        proto = " ".join(f"{k}={v}" for k, v in entry["protocol"].items())
        print(f"{metric:8s} {cells}\n         [{proto}]")
        if "note" in entry:
            print(f"         ({entry['note']})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ebm_vae.core.config import ConfigError
    from ebm_vae.data.datasets import DatasetError
    from ebm_vae.eval.classifier import ClassifierError
    from ebm_vae.eval.inception import InceptionWeightsError

    try:
        return run(args)
    except (UsageError, ConfigError, DatasetError, ClassifierError, InceptionWeightsError,
            FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from ebm_vae.core.runs import load_run
    from ebm_vae.utils.runtime import seed_all, set_device

    loaded = load_run(args.ckpt, untrained=args.untrained, device=args.device) if args.ckpt else None
    if loaded is None:
        set_device(args.device or "cpu")
    cfg = loaded.cfg if loaded else None
    dataset = args.stats or (cfg.data.name if cfg else args.dataset)
    root = args.data_root or (cfg.data.root if cfg else None)
    if not dataset:
        raise UsageError("say which dataset: --ckpt RUN_DIR or --dataset NAME")
    progress = not args.no_progress
    if args.train_classifier:
        return train_classifier(args, dataset, root, progress)
    if args.stats:
        return write_stats(args, dataset, root, cfg, progress)

    metrics = ["recon"] if args.reconstruct else [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown or not metrics:
        raise UsageError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    if args.n < 10:
        raise UsageError("--n must be >= 10 (IS uses 10 splits; FID needs a covariance)")
    if sum(bool(x) for x in (args.images, args.real, args.untrained)) > 1:
        raise UsageError("give at most one of --images, --real, --untrained")
    if "recon" in metrics and loaded is None:
        raise UsageError("recon needs a model: --ckpt RUN_DIR")
    if loaded is None and not (args.images or args.real):
        raise UsageError("nothing to evaluate: give --ckpt RUN_DIR, --images NPZ or --real SPLIT")
    seed = args.seed if args.seed is not None else (cfg.seed if cfg else 0)
    steps = args.steps if args.steps is not None else (cfg.sample.steps if cfg else None)

    # every prerequisite first, so nothing fails after a long sampling run
    prereq = check_prerequisites(args, metrics, dataset, root, cfg)
    seed_all(seed)
    source, sets = image_sets(args, metrics, loaded, dataset, root, steps, progress)
    protocol = {"source": source, "dataset": dataset,
                "num_samples": min(len(v) for v in sets.values()) if sets else None,
                "langevin_steps": steps if source in ("model", "untrained") else None,
                "reference": args.reference, "seed": seed,
                "iteration": loaded.iteration if source in ("model", "untrained") else None,
                "run": args.ckpt}
    results = compute(args, metrics, prereq, sets, loaded, protocol, progress)
    out = Path(args.out) if args.out else default_json(args, source)
    write_json(out, results)
    print_table(results)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def default_json(args: argparse.Namespace, source: str) -> Path:
    name = "eval.json" if source == "model" else f"eval_{source}.json"
    return Path(args.ckpt) / name if args.ckpt else Path(name)


def check_prerequisites(args, metrics: list[str], dataset: str, root, cfg) -> dict:
    """Load what the metrics need (weights, statistics, classifier, test split) or fail clearly."""
    from ebm_vae.eval.evaluate import classifier_path, default_inception_stats
    from ebm_vae.eval.metrics import FeatureStats

    prereq: dict = {}
    if "fid" in metrics or "is" in metrics:
        from ebm_vae.eval.inception import load_inception

        prereq["inception"] = load_inception(args.inception or (cfg.eval.inception if cfg else None))
    if "fid" in metrics:
        path = Path(args.fid_stats or default_inception_stats(dataset, args.reference))
        if not path.is_file():
            raise FileNotFoundError(
                f"no Inception reference statistics at {path}; make them once with `python "
                f"tools/evaluate.py --stats {dataset} --reference {args.reference} --data-root DIR "
                f"--fid-stats {path}`")
        prereq["fid_stats"], prereq["fid_stats_meta"] = FeatureStats.load(path)
        prereq["fid_stats_path"] = str(path)
    if "cls_fid" in metrics:
        from ebm_vae.eval.classifier import load_classifier

        path = classifier_path(Path(args.ckpt) if args.ckpt else None, args.classifier)
        prereq["classifier"] = load_classifier(path)
        prereq["classifier_path"] = str(path)
        if prereq["classifier"].dataset != dataset:
            raise UsageError(f"classifier {path} was trained on {prereq['classifier'].dataset}, "
                             f"not {dataset}")
    if "recon" in metrics:
        from ebm_vae.data.datasets import load_split

        images, _ = load_split(dataset, root, "test")
        prereq["test_images"] = images[:args.recon_n] if args.recon_n else images
    return prereq


def image_sets(args, metrics: list[str], loaded, dataset: str, root, steps, progress: bool
               ) -> tuple[str, dict]:
    """The image sets to score, by name, and the source label (none for recon alone)."""
    source = ("file" if args.images else f"real_{args.real}" if args.real else
              "untrained" if args.untrained else "model")
    if not {"fid", "is", "cls_fid"} & set(metrics):
        return source, {}
    if args.images:
        with np.load(args.images) as f:
            if "images" not in f:
                raise ValueError(f"{args.images} has no array `images`")
            sets = {k: f[k][:args.n] for k in ("proposals", "images") if k in f}
        return source, sets
    if args.real:
        from ebm_vae.data.datasets import load_split

        return source, {source: load_split(dataset, root, args.real)[0][:args.n]}
    from ebm_vae.core.sampling import ancestral_sample, with_steps

    cfg = loaded.cfg
    pair = ancestral_sample(loaded.models, args.n, cfg.model.latent_dim, with_steps(cfg.langevin, steps),
                            args.batch_size or cfg.train.num_chains, progress)
    return source, {"proposals": pair.proposals, "revised": pair.revised}


def compute(args, metrics: list[str], prereq: dict, sets: dict, loaded, protocol: dict,
            progress: bool) -> dict:
    from ebm_vae.eval.evaluate import cls_fid_results, inception_results

    results: dict = {}
    if "fid" in metrics or "is" in metrics:
        inc = inception_results(prereq["inception"], sets, prereq.get("fid_stats"), "fid" in metrics,
                                "is" in metrics, batch_size=50, progress=progress)
        for name, entry in inc.items():
            results[name] = {"protocol": protocol, **entry}
        if "fid" in results:
            results["fid"]["reference_stats"] = prereq["fid_stats_path"]
    if "cls_fid" in metrics:
        results["cls_fid"] = {"protocol": protocol, "classifier": prereq["classifier_path"],
                              **cls_fid_results(prereq["classifier"], sets, args.reference)}
    if "recon" in metrics:
        results["recon"] = reconstruct(args, prereq["test_images"], loaded, protocol, progress)
    return results


def reconstruct(args, images: np.ndarray, loaded, protocol: dict, progress: bool) -> dict:
    from ebm_vae.core.sampling import reconstruct as recon
    from ebm_vae.core.sampling import with_steps
    from ebm_vae.eval.evaluate import recon_results
    from ebm_vae.utils.images import save_grids

    cfg = loaded.cfg
    steps = protocol["langevin_steps"] if protocol["langevin_steps"] is not None else cfg.sample.steps
    pair = recon(loaded.models, images, with_steps(cfg.langevin, steps), use_mean=args.z == "mu",
                 batch_size=args.batch_size or cfg.train.num_chains, progress=progress)
    grid = Path(args.ckpt) / ("reconstruction.png" if protocol["source"] == "model"
                              else f"reconstruction_{protocol['source']}.png")
    save_grids(grid, [("observed (test)", images[:64]), ("decoded g(z)", pair.proposals[:64]),
                      (f"revised ({steps} Langevin steps)", pair.revised[:64])])
    proto = {**protocol, "num_samples": len(images), "langevin_steps": steps, "reference": "test split"}
    return {"protocol": proto, "z": args.z, "num_images": len(images),
            **recon_results(pair.proposals, pair.revised, images), "grid": str(grid)}


def train_classifier(args, dataset: str, root, progress: bool) -> int:
    from ebm_vae.eval.evaluate import classifier_path, train_and_save_classifier

    path = classifier_path(Path(args.ckpt) if args.ckpt else None, args.classifier)
    if args.epochs < 1:
        raise UsageError("--epochs must be >= 1")
    clf = train_and_save_classifier(path, dataset, root, args.epochs, progress=progress)
    print(f"classifier for {dataset}: test accuracy {clf.test_accuracy:.4f}; wrote {path}")
    return 0


def write_stats(args, dataset: str, root, cfg, progress: bool) -> int:
    from ebm_vae.data.datasets import load_split
    from ebm_vae.eval.evaluate import default_inception_stats
    from ebm_vae.eval.inception import inception_outputs, load_inception
    from ebm_vae.eval.metrics import feature_stats

    net = load_inception(args.inception or (cfg.eval.inception if cfg else None))
    images, _ = load_split(dataset, root, args.reference)
    feats, _ = inception_outputs(net, images, batch_size=50, progress=progress)
    out = Path(args.fid_stats or default_inception_stats(dataset, args.reference))
    feature_stats(feats).save(out, dataset=dataset, split=args.reference)
    print(f"wrote {out} (Inception pool3 statistics of {len(images)} {dataset} {args.reference} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
