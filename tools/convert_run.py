#!/usr/bin/env python
"""Convert a run folder of the old checkpoint format (checkpoints/last.ckpt, one pickle) to
Paddle's files: checkpoints/iter_N/ with ebm/encoder/decoder.pdparams, opt_ebm/opt_vae.pdopt and
state.json. The old file is left in place; sampling, evaluation and --resume read either and
take whichever is at the later iteration (so converting a run that an old process is still
training is safe: convert again when it stops).

  python tools/convert_run.py runs/mnist
  python tools/convert_run.py runs/mnist --weights-only pretrained/mnist   # config.yaml + .pdparams
  python tools/convert_run.py runs/mnist/checkpoints/iter_0003000 --weights-only pretrained/mnist
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ebm_vae.core.checkpoints import LEGACY_CHECKPOINT, convert_legacy, split_checkpoint

from ebm_vae.core.runs import export_weights
from ebm_vae.errors import UserError
from ebm_vae.utils.cli import run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder (config.yaml + checkpoints/); "
                        "with --weights-only also one checkpoint folder RUN_DIR/checkpoints/iter_N")
    parser.add_argument("--weights-only", metavar="OUT_DIR",
                        help="instead, write OUT_DIR/config.yaml and the three networks' .pdparams "
                        "of the run's newest checkpoint (either format) or of the checkpoint "
                        "folder given: what shipped weights look like; tools/sample.py and "
                        "ebm_vae.load_run read such a folder")
    args = parser.parse_args(argv)
    return run_tool(lambda: convert(args))


def convert(args: argparse.Namespace) -> None:
    """Convert the run, or export its weights (--weights-only)."""
    run_dir = split_checkpoint(args.run_dir)[0]
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run folder: {run_dir / 'config.yaml'} not found")
    if args.weights_only:
        out = export_weights(args.run_dir, Path(args.weights_only))
        print(f"wrote {out}/config.yaml, ebm/encoder/decoder.pdparams and weights.json",
              file=sys.stderr)
        return
    target = convert_legacy(run_dir)
    print(f"wrote {target} from {run_dir / LEGACY_CHECKPOINT}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
