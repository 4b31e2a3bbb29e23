#!/bin/bash
# Sixth session (2026-12-06): fresh evaluation of the continuation runs' best states (issue 19), and
# of the weights they would replace, with the same protocol as evaluate.sh: 1,000 samples, seed 1,
# 10 Langevin steps (the models' own length), classifier FID/IS; Inception FID of 1,000 revised
# samples vs 2,000 train images. Run from a checkout of the commit named in each JSON, one thread.
#   bash evaluate_session6.sh NAME WEIGHTS DATASET DATA_FOLDER CLASSIFIER OUT
# e.g. NAME=mnist_iter9250 WEIGHTS=/work/runs/mnist_init/checkpoints/best DATASET=mnist
#      DATA_FOLDER=/work/shared/data/mnist CLASSIFIER=/work/runs/classifiers/mnist OUT=results/shipped_models
set -ex
NAME=$1; CK=$2; DS=$3; DATA=$4; CLS=$5; OUT=$6
export OMP_NUM_THREADS=1
python tools/evaluate.py --ckpt $CK --steps 10 --metrics cls_fid,cls_is --classifier $CLS --data-root $DATA \
    --n 1000 --seed 1 --threads 1 --no-progress --out $OUT/${NAME}_cls_own10.json
python tools/sample.py --ckpt $CK --n 1000 --steps 10 --seed 1 --threads 1 --no-progress --out /tmp/${NAME}_samples.npz
python tools/evaluate.py --images /tmp/${NAME}_samples.npz --dataset $DS --data-root $DATA --metrics fid --n 1000 \
    --reference-n 2000 --threads 1 --no-progress --out $OUT/fid_${NAME}.json
