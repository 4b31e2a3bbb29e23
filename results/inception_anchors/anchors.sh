#!/bin/bash
# Inception FID anchors, small-N protocol on one CPU thread, code of WORKTREE
set -x
cd WORKTREE; source VENV/bin/activate
export PYTHONPATH=WORKTREE OMP_NUM_THREADS=1
C=CIFAR_FOLDERS; M=MNIST; A=OUT
E="python tools/evaluate.py --threads 1 --no-progress --metrics fid --reference train --reference-n 5000"
$E --dataset cifar10 --data-root $C --real test --n 2000 --out $A/cifar_test2000.json
python -c "import numpy as np; r=np.random.default_rng(0); np.savez('$A/noise.npz', images=(r.random((2000,3,32,32))*2-1).astype('float32'))"
$E --dataset cifar10 --data-root $C --images $A/noise.npz --n 2000 --out $A/cifar_noise2000.json
python tools/train.py -c experiments/cifar10_cpu.yaml --data-root $C --threads 1 --no-progress --max-iters 1 --out $A/cifar_init
$E --ckpt $A/cifar_init --data-root $C --untrained --n 2000 --out $A/cifar_untrained2000.json
$E --dataset cifar10 --data-root $C --real train --n 2000 --out $A/cifar_train2000.json
