#!/bin/bash
# Score one model with the shipped models' protocol: 1,000 samples, seed 1, 10 Langevin steps (the
# models' own length), classifier FID and IS of the revised samples and of the VAE proposals;
# Inception FID of 1,000 revised samples vs 2,000 train images. One CPU thread. Writes
# OUT/NAME_cls_own10.json and OUT/fid_NAME.json (each with its command and commit).
#   bash score_model.sh NAME WEIGHTS DATASET DATA_FOLDER CLASSIFIER OUT
# e.g. bash results/shipped_models/score_model.sh mnist pretrained/mnist mnist DATA/mnist runs/classifiers/mnist runs/scores
# (the classifier: python tools/evaluate.py --train-classifier --dataset mnist --data-root DATA/mnist --classifier runs/classifiers/mnist)
set -ex
NAME=$1; CK=$2; DS=$3; DATA=$4; CLS=$5; OUT=$6
export OMP_NUM_THREADS=1
mkdir -p $OUT
python tools/evaluate.py --ckpt $CK --steps 10 --metrics cls_fid,cls_is --classifier $CLS --data-root $DATA \
    --n 1000 --seed 1 --threads 1 --no-progress --out $OUT/${NAME}_cls_own10.json
python tools/sample.py --ckpt $CK --n 1000 --steps 10 --seed 1 --threads 1 --no-progress --out /tmp/${NAME}_samples.npz
python tools/evaluate.py --images /tmp/${NAME}_samples.npz --dataset $DS --data-root $DATA --metrics fid --n 1000 \
    --reference-n 2000 --threads 1 --no-progress --out $OUT/fid_${NAME}.json
