#!/bin/bash
# Inception FID of a sampler folder (pretrained/cifar10 or a checkpoint), two protocols:
#   2,000 revised samples and their proposals (10 Langevin steps, seed 1) vs 5,000 train images
#   10,000 revised samples (seed 1) vs 10,000 train images (the released code's size)
# one CPU thread; the floors (real test images) are in ../../inception_anchors/.
# usage: evaluate_shipped.sh CKPT CIFAR_FOLDERS OUT [10k]
#   SAMPLE_FLAGS="--ema" samples a checkpoint's weight average instead of its weights
set -ex
CK=$1; C=$2; OUT=$3; mkdir -p $OUT
python tools/sample.py --ckpt $CK $SAMPLE_FLAGS --n 2000 --steps 10 --seed 1 --proposals --threads 1 --no-progress --out $OUT/samples2000.npz
python tools/evaluate.py --images $OUT/samples2000.npz --dataset cifar10 --data-root $C --metrics fid --n 2000 --reference train --reference-n 5000 --threads 1 --no-progress --out $OUT/fid_2000_vs_5000.json
if [ "$4" = 10k ]; then
  python tools/sample.py --ckpt $CK $SAMPLE_FLAGS --n 10000 --steps 10 --seed 1 --threads 1 --no-progress --out $OUT/samples10000.npz
  python tools/evaluate.py --images $OUT/samples10000.npz --dataset cifar10 --data-root $C --metrics fid --n 10000 --reference train --reference-n 10000 --threads 1 --no-progress --out $OUT/fid_10000_vs_10000.json
fi
