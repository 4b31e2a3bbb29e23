#!/usr/bin/env python
"""Ancestral Langevin sampling from a trained run: z ~ N(0, I) -> g_alpha(z) -> L Langevin steps.

Writes an .npz with `images` (revised samples, [N, C, H, W] float32 in [-1, 1], clipped) and, with
--proposals, `proposals` (the decoder outputs), plus a PNG grid of the first 64 of both.
--interpolate instead writes a grid of linear paths between random z pairs (decoded | revised).

  python tools/sample.py --ckpt runs/mnist --n 50000 --out runs/mnist/samples.npz
  python tools/sample.py --ckpt runs/mnist --interpolate
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import ebm_vae
from ebm_vae.core.sampling import check_sampling_memory, interpolate, sampling_defaults, with_steps
from ebm_vae.training.checkpoints import output_place
from ebm_vae.training.runs import configure_for_run
from ebm_vae.utils.atomic import atomic_write
from ebm_vae.utils.cli import add_threads_arg, run_tool
from ebm_vae.utils.images import save_grids
from ebm_vae.utils.runtime import seed_all
from ebm_vae.utils.typed_yaml import ConfigError


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write arrays to an .npz atomically."""
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, metavar="RUN_DIR",
                        help="run folder: config.yaml and a checkpoint (checkpoints/iter_N/), or "
                        "config.yaml beside ebm/encoder/decoder.pdparams; or one checkpoint "
                        "folder RUN_DIR/checkpoints/iter_N (outputs then go to RUN_DIR, named *_iter_N)")
    parser.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    parser.add_argument("--steps", type=int, help="Langevin steps (default: the config's sample.steps)")
    parser.add_argument("--batch-size", type=int,
                        help="chains per batch (default: train.num_chains; the decoder's batch "
                        "norm uses batch statistics, so this matches training)")
    parser.add_argument("--out", help="output .npz (default RUN_DIR/samples.npz) or, with "
                        "--interpolate, .png (default RUN_DIR/interpolation.png)")
    parser.add_argument("--proposals", action="store_true",
                        help="also store the VAE proposals g(z) (key `proposals`)")
    parser.add_argument("--interpolate", action="store_true",
                        help="grid of linear interpolations between random z pairs instead")
    parser.add_argument("--pairs", type=int, default=8, help="interpolation paths (rows)")
    parser.add_argument("--points", type=int, default=8, help="points per interpolation path")
    parser.add_argument("--untrained", action="store_true",
                        help="use the run's architecture at its initialisation (no checkpoint)")
    parser.add_argument("--ema", action="store_true",
                        help="use the checkpoint's moving average of the weights (runs trained "
                        "with train.ema > 0); outputs are named *_ema")
    parser.add_argument("--seed", type=int, help="seed for z and Langevin noise (default: config seed)")
    parser.add_argument("--device", choices=["cpu", "gpu"], help="override the config's device")
    add_threads_arg(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    return run_tool(lambda: sample(args), "nothing was written")


def check_args(args: argparse.Namespace) -> None:
    """Refuse impossible counts and an --out of another format than the one written, before the
    run is loaded."""
    if args.n < 1 or args.pairs < 1 or args.points < 2:
        raise ConfigError("need --n >= 1, --pairs >= 1 and --points >= 2")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.steps is not None and args.steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {args.steps}")
    if args.out and Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out} is a folder; name the file to write")
    suffix = ".png" if args.interpolate else ".npz"
    if args.out and Path(args.out).suffix.lower() != suffix:
        what = "--interpolate writes a PNG" if args.interpolate else "samples are written as .npz"
        raise ConfigError(f"--out {args.out}: {what}; name the file *{suffix}")


def sample(args: argparse.Namespace) -> None:
    """Draw the samples (or the interpolation grid) and write them."""
    check_args(args)
    run_dir, suffix = output_place(args.ckpt)
    suffix += "_ema" if args.ema else ""
    configure_for_run(args.ckpt, args.device, args.threads)
    run = ebm_vae.load_run(args.ckpt, untrained=args.untrained, averaged=args.ema)
    seed = run.cfg.seed if args.seed is None else args.seed
    steps = sampling_defaults(run.cfg, args.steps)[0]
    if args.interpolate:
        seed_all(seed)
        check_sampling_memory(args.pairs * args.points, run.cfg.model, "pairs and --points")
        pair = interpolate(run.models, run.cfg.model.latent_dim,
                           with_steps(run.cfg.langevin, steps), args.pairs, args.points)
        out = Path(args.out or run_dir / f"interpolation{suffix}.png")
        save_grids(out, [("decoded g(z(t))", pair.proposals),
                         (f"revised ({steps} Langevin steps)", pair.revised)], nrow=args.points)
        print(f"wrote {out}", file=sys.stderr)
        return
    images, proposals = ebm_vae.sample(run, args.n, steps, seed, args.batch_size, proposals=True,
                                       progress=not args.no_progress)
    out = Path(args.out or run_dir / f"samples{suffix}.npz")
    save_npz(out, **{"images": images, **({"proposals": proposals} if args.proposals else {})})
    save_grids(out.with_suffix(".png"), [("VAE proposals g(z)", proposals[:64]),
                                         (f"revised ({steps} Langevin steps)", images[:64])])
    age = "unknown iteration" if run.iteration is None else f"iteration {run.iteration}"
    print(f"wrote {out} ({len(images)} images, {steps} Langevin steps, {age}) and "
          f"{out.with_suffix('.png')}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
