#!/usr/bin/env python
"""Convert a checkpoint of the old format (one pickle) to a checkpoint folder of Paddle's files
beside it; the old file is left in place, and nothing else reads it any more:

  a run folder (its checkpoints/last.ckpt)  -> checkpoints/iter_N/  (ebm/encoder/decoder.pdparams,
                                               opt_ebm/opt_vae.pdopt, state.json)
  a completion snapshot snapshots/iter_N.ckpt -> snapshots/iter_N/
  an offline classifier NAME.ckpt           -> NAME/  (net.pdparams, stats.pdparams, state.json)

The tensors are copied exactly. With --weights-only, export a run's newest checkpoint (or the
checkpoint folder given) as shipped weights instead.

  python tools/convert_run.py runs/mnist
  python tools/convert_run.py runs/mnist/classifier.ckpt
  python tools/convert_run.py runs/facade64/snapshots/iter_0000450.ckpt
  python tools/convert_run.py runs/mnist --weights-only pretrained/mnist   # config.yaml + .pdparams
  python tools/convert_run.py runs/mnist/checkpoints/iter_0003000 --weights-only pretrained/mnist
  python tools/convert_run.py runs/mnist/checkpoints/best --weights-only out/mnist_ema --ema
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ebm_vae.training.checkpoints import CHECKPOINTS, LEGACY_CHECKPOINT, split_checkpoint
from ebm_vae.training.legacy import convert_run, convert_snapshot, is_run_state, read_pickle
from ebm_vae.training.runs import export_weights
from ebm_vae.errors import UserError
from ebm_vae.eval.classifier import convert_classifier
from ebm_vae.utils.cli import run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", metavar="PATH", help="an old-format checkpoint: a run folder "
                        "(config.yaml + checkpoints/last.ckpt) or that last.ckpt, a completion "
                        "snapshot snapshots/iter_N.ckpt, or a classifier NAME.ckpt; with "
                        "--weights-only a run folder or one of its checkpoint folders "
                        "RUN_DIR/checkpoints/iter_N")
    parser.add_argument("--weights-only", metavar="OUT_DIR",
                        help="instead, write OUT_DIR/config.yaml and the three networks' .pdparams "
                        "of the run's newest checkpoint or of the checkpoint folder given: what "
                        "shipped weights look like; tools/sample.py and ebm_vae.load_run read "
                        "such a folder")
    parser.add_argument("--ema", action="store_true",
                        help="with --weights-only: export the moving average of the weights "
                        "(runs trained with train.ema > 0) instead of the trained weights")
    parser.add_argument("--sampler-only", action="store_true",
                        help="with --weights-only: the EBM and decoder alone, what sampling needs "
                        "(no encoder: smaller; --init from them starts a fresh encoder)")
    args = parser.parse_args(argv)
    return run_tool(lambda: convert(args))


def _run_folder(path: Path) -> Path:
    """The run folder `path` names (itself, or the run of its checkpoint), checked."""
    run_dir = split_checkpoint(path)[0]
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run folder: {run_dir / 'config.yaml'} not found")
    return run_dir


def convert_old(path: Path) -> tuple[Path, Path]:
    """Convert the old-format checkpoint `path` names; (the folder written, the file read)."""
    if path.is_dir() or (path.name == Path(LEGACY_CHECKPOINT).name
                         and path.parent.name == CHECKPOINTS):
        run_dir = _run_folder(path if path.is_dir() else path.parent.parent)
        return convert_run(run_dir), run_dir / LEGACY_CHECKPOINT
    payload = read_pickle(path)
    if is_run_state(payload):
        return convert_snapshot(path, payload), path
    if "state" in payload and "dataset" in payload:
        return convert_classifier(path, payload), path
    raise UserError(f"{path} is not an old-format checkpoint of this project (a run's, a "
                    "completion snapshot's or a classifier's)")


def convert(args: argparse.Namespace) -> None:
    """Convert the old checkpoint, or export a run's weights (--weights-only)."""
    for flag, given in (("--ema", args.ema), ("--sampler-only", args.sampler_only)):
        if given and not args.weights_only:
            raise UserError(f"{flag} goes with --weights-only OUT_DIR (it shapes the export)")
    if args.weights_only:
        _run_folder(Path(args.path))
        out = export_weights(args.path, Path(args.weights_only), averaged=args.ema,
                             sampler_only=args.sampler_only)
        nets = "ebm/decoder" if args.sampler_only else "ebm/encoder/decoder"
        print(f"wrote {out}/config.yaml, {nets}.pdparams and weights.json", file=sys.stderr)
        return
    target, source = convert_old(Path(args.path))
    print(f"wrote {target} from {source}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
