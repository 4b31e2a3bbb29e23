#!/bin/bash
# Code 6c43f94, one thread: fresh evaluation of the Fashion-MNIST
# clamp run's checkpoints/best, iteration 4,750, now pretrained/fashion_mnist; the first command wrote
# fashion_mnist_iter4750_cls_own10.json (run alone, before this script), the others the two JSONs named
# *_iter4750 below (the script's output names were renamed *_candidate4750 -> *_iter4750 when committed).
# /work/runs/... are this machine's paths: runs/fmnist_clamp, the classifier, the data.
# python tools/evaluate.py --ckpt /work/runs/fmnist_clamp/checkpoints/best --steps 10 --metrics cls_fid,cls_is --classifier /work/runs/classifiers/fashion_mnist --data-root /work/shared/data/fashion-mnist --n 1000 --seed 1 --threads 1 --no-progress --out /work/runs/fm5/fashion_mnist_best4750_cls_own10.json
set -ex
source /work/venv/bin/activate
export PYTHONPATH=/work/wt-i20 OMP_NUM_THREADS=1
cd /work/wt-i20
CK=/work/runs/fmnist_clamp/checkpoints/best; OUT=/work/runs/fm5
C="--classifier /work/runs/classifiers/fashion_mnist --data-root /work/shared/data/fashion-mnist --n 1000 --seed 1 --threads 1 --no-progress"
python tools/sample.py --ckpt $CK --n 1000 --steps 10 --seed 1 --threads 1 --no-progress --out $OUT/fashion_mnist_candidate4750_samples.npz
python tools/evaluate.py --images $OUT/fashion_mnist_candidate4750_samples.npz --dataset fashion_mnist --data-root /work/shared/data/fashion-mnist --metrics fid --n 1000 --reference-n 2000 --threads 1 --no-progress --out $OUT/fid_fashion_mnist_candidate4750.json
python tools/evaluate.py --ckpt $CK --steps 30 --metrics cls_fid,cls_is $C --out $OUT/fashion_mnist_candidate4750_cls_30.json
