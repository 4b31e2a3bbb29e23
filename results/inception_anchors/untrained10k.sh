#!/bin/bash
# Inception FID anchor: the untrained model (proposals and 10-step revisions of
# cifar10_cpu.yaml at its seeded initialisation), 10,000 samples vs 10,000 train images (the
# protocol of anchors10k.sh), one CPU thread, code of WORKTREE (6c43f94)
set -x
W=$1; V=$2; C=$3; A=$4   # usage: untrained10k.sh WORKTREE VENV CIFAR_FOLDERS OUT
cd $W; source $V/bin/activate
export PYTHONPATH=$W OMP_NUM_THREADS=1
python tools/train.py -c experiments/cifar10_cpu.yaml --data-root $C --threads 1 --no-progress --max-iters 1 --out $A/cifar_init
python tools/evaluate.py --threads 1 --no-progress --metrics fid --reference train --reference-n 10000 \
  --ckpt $A/cifar_init --data-root $C --untrained --n 10000 --out $A/cifar_untrained10000.json
