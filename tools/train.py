#!/usr/bin/env python
"""Train an EBM with a VAE as amortized sampler (Algorithm 1) on MNIST, Fashion-MNIST or CIFAR-10.

Writes to the run folder: config.yaml (resolved), log.csv, samples/iter_*.png (VAE proposals next
to Langevin-revised samples), losses.png and checkpoints/iter_N/ (ebm/encoder/decoder.pdparams,
opt_ebm/opt_vae.pdopt, state.json). Ctrl-C (SIGINT) or SIGTERM saves a checkpoint at the last
completed iteration and exits with 130 / 143; --resume continues exactly.

  python tools/train.py -c experiments/mnist.yaml --data-root ~/data/mnist --max-iters 100
  python tools/train.py --resume runs/mnist --max-iters 200
  python tools/train.py -c experiments/mnist_cpu.yaml --init pretrained/mnist --out runs/more
"""
from __future__ import annotations

import argparse
import sys

from ebm_vae.core.config import config_from_dict
from ebm_vae.training.generation import train_generation
from ebm_vae.training.runs import model_shapes
from ebm_vae.eval.evaluate import training_evaluation
from ebm_vae.utils.cli import add_train_args, resolve, run_tool
from ebm_vae.utils.runtime import configure_runtime
from ebm_vae.utils.typed_yaml import ConfigError


def train(args: argparse.Namespace) -> None:
    """Resolve the flags and train (or resume) the run."""
    if args.init and args.resume is not None:
        raise ConfigError("--init starts a new run from trained weights; --resume continues a "
                          "run from its own checkpoint: give one of them")
    cfg, run_dir, resume = resolve(args, config_from_dict, shapes=model_shapes)
    print(f"run folder: {run_dir}", file=sys.stderr)
    configure_runtime(cfg.device, args.threads)  # training keeps these math threads
    train_generation(cfg, run_dir, args.max_iters, resume, progress=not args.no_progress,
                     evaluation=training_evaluation, init=args.init)
    print(f"done: {run_dir}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(parser)
    parser.add_argument("--init", metavar="DIR", help="start the new run from trained networks: "
                        "shipped weights (pretrained/mnist), a run folder or a checkpoint folder "
                        "with the config's architecture. The run counts on from their iteration "
                        "(weights.json), so data order and learning-rate decay go on from there; "
                        "the optimisers start fresh, so unlike --resume this is not exact")
    args = parser.parse_args(argv)
    # Ctrl-C before training started (data loading): nothing to save
    return run_tool(lambda: train(args), "nothing was saved (no iteration had finished)")

if __name__ == "__main__":
    sys.exit(main())
