#!/usr/bin/env python
"""Image completion with a conditional EBM and a conditional VAE as its amortized sampler.

  train  conditional variational MCMC teaching on (image, mask) pairs; same run folder, flags,
         grids, checkpoints and resume as tools/train.py
  eval   fill the test split's holes; PSNR/SSIM/L1 over the hole and the whole image for the
         model and baselines -> RUN_DIR/eval/metrics.json and completions.png
  fill   complete your own picture (mask image: white = hole); --samples K for K fills
  curve  plot the test-split hole PSNR logged during training (eval.every) against the baselines
  baseline  train the L2 U-Net baseline (g's U-Net without z, plain L2 on the hole) for a budget
  export    write a run's weights alone (config.yaml + .pdparams) for `fill --ckpt` / `eval --ckpt`

  python tools/complete.py train -c experiments/facade_completion.yaml --data-root DATA/cmp-facade/pix2pix_facades
  python tools/complete.py eval --ckpt runs/facade_completion
  python tools/complete.py fill --ckpt runs/facade_completion --image in.png --mask hole.png --out out.png
  python tools/complete.py baseline -c experiments/facade_completion_64.yaml --data-root D --minutes 20 --out runs/l2unet
  python tools/complete.py export --ckpt runs/facade64 --out pretrained/facade64
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from ebm_vae.completion.evaluate import EvalRequest, Fills, evaluate, fill_file, plot_curve
from ebm_vae.completion.l2_unet import train_l2_unet
from ebm_vae.completion.masks import FillError
from ebm_vae.completion.networks import build_conditional_models
from ebm_vae.completion.train import export_completion, train_completion
from ebm_vae.training.runs import model_shapes

from ebm_vae.completion.config import completion_config_from_dict
from ebm_vae.utils.cli import add_threads_arg, add_train_args, resolve, run_tool
from ebm_vae.utils.runtime import configure_runtime


def _train(args: argparse.Namespace) -> None:
    shapes = functools.partial(model_shapes, build=build_conditional_models)
    cfg, run_dir, resume = resolve(args, completion_config_from_dict, shapes=shapes)
    print(f"run folder: {run_dir}", file=sys.stderr)
    configure_runtime(cfg.device, args.threads)  # training keeps these math threads
    train_completion(cfg, run_dir, args.max_iters, resume, progress=not args.no_progress)
    print(f"done: {run_dir}", file=sys.stderr)


def _check_counts(args: argparse.Namespace) -> None:
    """Refuse a --steps below 0 or a --limit below 1 (a negative one: "all but the last N")."""
    if args.steps is not None and args.steps < 0:
        raise FillError(f"--steps must be >= 0, got {args.steps}")
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise FillError(f"--limit must be >= 1, got {args.limit}")


def _eval(args: argparse.Namespace) -> None:
    _check_counts(args)
    out = args.out or Path(args.ckpt) / "eval"
    request = EvalRequest(args.data_root, args.split, args.limit, args.mask_kind, args.mask_size,
                          args.checkpoint, args.uncond_ckpt, args.l2_ckpt, args.fid_holes,
                          args.nearest)
    report = evaluate(args.ckpt, out, request, Fills(args.seed, args.steps, args.samples),
                      args.threads)
    mask = report["mask"]
    print(f"checkpoint {report['checkpoint']} (iteration {report['iteration']}); test holes: "
          f"{mask['kind']} {mask['size']}x{mask['size']} (trained on {mask['trained_on']['kind']} "
          f"{mask['trained_on']['size']}); {report['samples']} fill(s) per hole")
    fid = report.get("fid", {}).get("methods", {})
    hole_fid = report.get("fid", {}).get("hole", {})
    print(f"{'method':<52} {'PSNR hole':>9} {'SSIM hole':>9} {'L1 hole':>8} {'PSNR img':>9} "
          f"{'SSIM img':>8} {'L1 img':>7} {'sharp':>6}"
          + (f" {'FID':>6} {'FIDhole':>7}" if fid else ""))
    for name, m in report["methods"].items():
        print(f"{name[:52]:<52} {m['psnr_hole']['mean']:9.2f} {m['ssim_hole']['mean']:9.4f} "
              f"{m['l1_hole']['mean']:8.4f} {m['psnr_image']['mean']:9.2f} "
              f"{m['ssim_image']['mean']:8.4f} {m['l1_image']['mean']:7.4f} "
              f"{m['sharpness']:6.3f}" + (f" {fid[name]['fid']:6.2f} {hole_fid[name]['fid']:7.2f}"
                                          if name in fid else ""))
    pairs = report["paired_vs_harmonic"]
    print("ours - harmonic, paired over the images (mean ± standard error; images where ours is "
          "better): " + "; ".join(f"{k} {v['mean_diff']:+.4f} ± {v['std_err']:.4f} ({v['ours_better']:.0%})"
                                  for k, v in pairs.items()))
    if "diversity_l1_hole" in report:
        d = report["diversity_l1_hole"]
        print(f"diversity (mean pairwise L1 of the K fills in the hole, [0,1] units): revised "
              f"{d['revised']['mean']:.4f}, proposals {d['proposal']['mean']:.4f}")
    if "fid" in report:
        one = next(iter(fid.values()))
        print(f"FID: {one['n_completed']} completed images ({report['fid']['holes_per_image']} "
              f"holes per image) per method against the {one['n_real']} real images")
    if "fid_skipped" in report:
        print(f"FID skipped: {report['fid_skipped']}")
    print(f"{report['images']} {report['split']} images; written {out}/metrics.json, {out}/completions.png")


def _fill(args: argparse.Namespace) -> None:
    _check_counts(args)
    fill_file(args.ckpt, args.image, args.mask, args.out, args.resize,
              Fills(args.seed, args.steps, args.samples), args.threads)
    out = Path(args.out)
    print(f"written {out}" if args.samples == 1 else
          f"written {out.stem}_1..{args.samples}.png and {out.stem}_grid.png in {out.parent}")


def _baseline(args: argparse.Namespace) -> None:
    args.resume, args.max_iters, args.device = None, None, None  # the shared resolve() flags
    cfg, run_dir, _ = resolve(args, completion_config_from_dict)
    print(f"baseline folder: {run_dir}", file=sys.stderr)
    train_l2_unet(cfg, run_dir, args.minutes, args.iters, progress=not args.no_progress,
                  threads=args.threads)
    print(f"done: {run_dir}", file=sys.stderr)


def _export(args: argparse.Namespace) -> None:
    out = export_completion(args.ckpt, args.out, args.checkpoint)
    print(f"wrote {out}/config.yaml, ebm/encoder/decoder.pdparams and weights.json; "
          f"fill with: python tools/complete.py fill --ckpt {out} ...", file=sys.stderr)


def _curve(args: argparse.Namespace) -> None:
    curve = plot_curve(args.ckpt, args.out)
    for i in range(len(curve["iteration"])):
        print(f"iteration {curve['iteration'][i]:6.0f}  {curve['minutes'][i]:6.1f} min  PSNR hole: "
              f"revised {curve['psnr_hole_revised'][i]:.2f}  proposal "
              f"{curve['psnr_hole_proposal'][i]:.2f}  harmonic {curve['psnr_hole_harmonic'][i]:.2f}"
              f"  mean {curve['psnr_hole_mean'][i]:.2f}")
    print(f"written {args.out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_args(sub.add_parser("train", help="train the conditional model"),
                   example="experiments/facade_completion_64.yaml")
    ev = sub.add_parser("eval", help="PSNR/SSIM/L1 on the test split, with baselines")
    ev.add_argument("--ckpt", required=True, metavar="RUN_DIR", help="a `complete.py train` run "
                    "or exported weights (`complete.py export`)")
    ev.add_argument("--checkpoint", metavar="DIR", help="evaluate this checkpoint of the run "
                    "(e.g. RUN_DIR/checkpoints/best or RUN_DIR/checkpoints/iter_0000400) instead "
                    "of the last one")
    ev.add_argument("--data-root", help="dataset folder (default: the run's data.root)")
    ev.add_argument("--uncond-ckpt", metavar="RUN_DIR", help="a tools/train.py run of the same "
                    "image size, evaluated as the unconditional encode-decode-revise baseline")
    ev.add_argument("--out", help="output folder (default: RUN_DIR/eval)")
    ev.add_argument("--limit", type=int, help="only the first N test images")
    ev.add_argument("--split", default="test", help="split to fill (default test; 'val' for the "
                    "pix2pix facades val/ folder, e.g. to pick a checkpoint without the test set)")
    ev.add_argument("--mask-kind", choices=["center", "random_square"], help="test holes of "
                    "another kind than the run was trained on (default: the run's mask.kind)")
    ev.add_argument("--mask-size", type=int, help="side of the test holes (default: mask.size)")
    ev.add_argument("--l2-ckpt", metavar="DIR", help="an L2 U-Net baseline folder (`complete.py "
                    "baseline`), scored on the same holes")
    ev.add_argument("--fid-holes", type=int, default=0, metavar="H", help="also the Inception FID "
                    "of each method's completions with H seeded holes per image against the real "
                    "images, and the hole FID of crops around the holes (needs the FID Inception "
                    "weights; 0 = off)")
    ev.add_argument("--nearest", action="store_true", help="also fill each hole with the same "
                    "pixels of the training image nearest in the visible pixels (a retrieval "
                    "baseline: real content, as sharp as the photos)")
    fi = sub.add_parser("fill", help="complete one picture")
    fi.add_argument("--ckpt", required=True, metavar="RUN_DIR", help="a `complete.py train` run "
                    "or exported weights (`complete.py export`, e.g. pretrained/facade64)")
    fi.add_argument("--image", required=True, help="picture to complete (PNG/JPEG)")
    fi.add_argument("--mask", required=True, help="mask of the same size; white (>= 128) = hole")
    fi.add_argument("--out", required=True, help="output PNG (K >= 2: OUT_1..K.png, OUT_grid.png)")
    fi.add_argument("--resize", action="store_true", help="accept pictures of another size than "
                    "the model's (filled at model size, resized back, pasted into the hole)")
    for p in (ev, fi):
        p.add_argument("--seed", type=int, default=0, help="seed of z, Langevin noise and masks")
        p.add_argument("--steps", type=int, help="Langevin steps (default: the run's sample.steps)")
        p.add_argument("--samples", type=int, default=1, metavar="K", help="K fills per hole, "
                       "each with its own z and Langevin chain (eval: grid and diversity)")
        add_threads_arg(p)
    cu = sub.add_parser("curve", help="plot the test hole PSNR logged during training")
    cu.add_argument("--ckpt", required=True, metavar="RUN_DIR", help="a run trained with eval.every > 0")
    cu.add_argument("--out", required=True, help="output PNG")
    _add_baseline_and_export(sub)
    args = parser.parse_args(argv)
    command = {"train": _train, "eval": _eval, "fill": _fill, "curve": _curve,
               "baseline": _baseline, "export": _export}[args.command]
    return run_tool(lambda: command(args))


def _add_baseline_and_export(sub: argparse._SubParsersAction) -> None:
    """The `baseline` and `export` commands' flags."""
    ba = sub.add_parser("baseline", help="train the L2 U-Net baseline for a wall-time budget")
    ba.add_argument("-c", "--config", required=True, help="the completion experiment file (its "
                    "data, masks, decoder U-Net, batch size, lr_vae and decay)")
    ba.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value (repeatable)")
    ba.add_argument("--data-root", help="dataset folder (sets data.root)")
    ba.add_argument("--out", required=True, help="the baseline's folder")
    ba.add_argument("--minutes", type=float, help="training time budget (sum of step times)")
    ba.add_argument("--iters", type=int, help="iteration budget (the first budget met stops)")
    ba.add_argument("--seed", type=int, help="override the config's seed")
    ba.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_arg(ba)
    ex = sub.add_parser("export", help="write a run's weights alone (shipped weights)")
    ex.add_argument("--ckpt", required=True, metavar="RUN_DIR", help="a `complete.py train` run")
    ex.add_argument("--checkpoint", metavar="DIR", help="export this checkpoint of the run (e.g. "
                    "RUN_DIR/checkpoints/best) instead of the newest")
    ex.add_argument("--out", required=True, help="folder for config.yaml and the .pdparams")


if __name__ == "__main__":
    sys.exit(main())
