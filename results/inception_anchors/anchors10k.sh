#!/bin/bash
# Inception FID anchors at the released code's reference size: 10,000 images vs 10,000
# train images, one CPU thread, code of WORKTREE (bdb2a0d)
set -x
W=$1; V=$2; C=$3; A=$4   # usage: anchors10k.sh WORKTREE VENV CIFAR_FOLDERS OUT
cd $W; source $V/bin/activate
export PYTHONPATH=$W OMP_NUM_THREADS=1
E="python tools/evaluate.py --threads 1 --no-progress --metrics fid --reference train --reference-n 10000"
$E --dataset cifar10 --data-root $C --real test --n 10000 --out $A/cifar_test10000.json
python -c "import numpy as np; r=np.random.default_rng(0); np.savez('$A/noise.npz', images=(r.random((10000,3,32,32))*2-1).astype('float32'))"
$E --dataset cifar10 --data-root $C --images $A/noise.npz --n 10000 --out $A/cifar_noise10000.json
