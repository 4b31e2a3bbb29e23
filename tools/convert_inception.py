#!/usr/bin/env python
"""Convert the FID Inception weights of pytorch-fid into a Paddle `.pdparams` for ebm_vae.eval.inception.

Input: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a torch state dict; reading it needs
torch), or the same state dict saved as an .npz of numpy arrays keyed by the pytorch-fid parameter
names (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_mean`, ..., `fc.weight`
[1008, 2048], `fc.bias`), which needs no torch. The names and shapes are checked against the
network; nothing is written on a mismatch.

  python tools/convert_inception.py pt_inception-2015-12-05-6726825d.pth inception_fid.pdparams
  python tools/convert_inception.py pt_inception.npz inception_fid.pdparams
"""
from __future__ import annotations

import argparse
import sys

from ebm_vae.eval.inception import convert_file
from ebm_vae.utils.cli import run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="pytorch-fid weights: .pth (needs torch) or .npz")
    parser.add_argument("dst", help="output .pdparams")
    args = parser.parse_args(argv)

    return run_tool(lambda: convert(args))


def convert(args: argparse.Namespace) -> None:
    """Convert and report the number of values written."""
    count = convert_file(args.src, args.dst)
    print(f"wrote {args.dst} ({count:,} values)")


if __name__ == "__main__":
    sys.exit(main())
