#!/bin/bash
# The shipped models' scores of the MNIST models shipped until iteration 6,500: what was run, one CPU thread each.
# REPO = a checkout of the commit named; DATA = the dataset folders; CLS = the MNIST classifier
# folder (tools/evaluate.py --train-classifier); OUT = this folder. "mnist" = the final
# pretrained/mnist (runs/mnist_clamp/checkpoints/best, iteration 6,500), evaluated the same way as
# "mnist3750" (pretrained/mnist of commit ae800b0, iteration 3,750; its files renamed mnist3750_*);
# "mnist_l30_earlier" is pretrained/mnist of commit c7b9322.
set -ex
export OMP_NUM_THREADS=1
C="--classifier $CLS --data-root $DATA/mnist --n 1000 --seed 1 --threads 1 --no-progress"
M="--metrics cls_fid,cls_is"
# classifier metrics (commits 9b16e88-7480598, named in each JSON; the evaluation code is the same in all)
# (each JSON's protocol.command is the exact command line that ran)
python tools/evaluate.py --ckpt pretrained/mnist --steps 10 $M $C --out $OUT/mnist_cls_own10.json
python tools/evaluate.py --ckpt pretrained/mnist --steps 30 $M $C --out $OUT/mnist_cls_30.json
python tools/evaluate.py --ckpt pretrained/mnist --untrained --steps 10 --metrics cls_fid $C --out $OUT/mnist_cls_untrained10.json
python tools/evaluate.py --dataset mnist --real test $M $C --out $OUT/mnist_cls_real_test.json
python tools/evaluate.py --ckpt EARLIER/pretrained/mnist --steps 30 $M $C --out $OUT/mnist_l30_earlier_cls_30.json
python tools/evaluate.py --ckpt pretrained/mnist --data-root $DATA/mnist --metrics recon --recon-n 1000 --seed 1 --classifier $CLS --out $OUT/mnist_recon.json
# Inception FID (commit 796bf15): 1,000 revised samples (seed 1) vs 2,000 train images (seeded choice)
F="--metrics fid --n 1000 --reference-n 2000 --threads 1 --no-progress"
fid() {  # name weights steps dataset data-folder
  python tools/sample.py --ckpt $2 --n 1000 --steps $3 --seed 1 --threads 1 --no-progress --out $OUT/$1_samples.npz
  python tools/evaluate.py --images $OUT/$1_samples.npz --dataset $4 --data-root $DATA/$5 $F --out $OUT/fid_$1.json
}
python tools/evaluate.py --dataset mnist --data-root $DATA/mnist --real test $F --out $OUT/fid_mnist_real_test.json
fid mnist_l30_earlier EARLIER/pretrained/mnist 30 mnist mnist
fid mnist pretrained/mnist 10 mnist mnist
python tools/evaluate.py --dataset fashion_mnist --data-root $DATA/fashion-mnist --real test $F --out $OUT/fid_fashion_mnist_real_test.json
fid fashion_mnist pretrained/fashion_mnist 10 fashion_mnist fashion-mnist
