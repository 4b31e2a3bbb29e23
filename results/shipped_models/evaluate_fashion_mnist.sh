#!/bin/bash
# Fashion-MNIST: candidates for pretrained/fashion_mnist from the clamp run (iterations 2,250
# and 2,500), scored like the MNIST model in evaluate.sh, one CPU thread each.
# REPO = a checkout of the commit named in the JSONs (bdb2a0d); DATA = the dataset folders;
# CLS = the Fashion-MNIST classifier folder that the run trained on first use
# (runs/classifiers/fashion_mnist); OUT = this folder. Arguments: NAME=CHECKPOINT_FOLDER ...
# ("shipped_before" = pretrained/fashion_mnist of commit bdb2a0d, the model these replace).
# STEPS30=1 also scores each at 30 Langevin steps. FLOOR=1 and RUN = the clamp run folder (its
# config.yaml) also score the floor and the ceiling. Each JSON's protocol holds the exact command.
set -ex
export OMP_NUM_THREADS=1
C="--classifier $CLS --data-root $DATA/fashion-mnist --n 1000 --seed 1 --threads 1 --no-progress"
F="--metrics fid --n 1000 --reference-n 2000 --threads 1 --no-progress"
for arg in "$@"; do
  name=${arg%%=*}; ck=${arg#*=}
  python tools/evaluate.py --ckpt $ck --steps 10 --metrics cls_fid,cls_is $C --out $OUT/fashion_mnist_${name}_cls_own10.json
  [ -n "$STEPS30" ] && python tools/evaluate.py --ckpt $ck --steps 30 --metrics cls_fid,cls_is $C --out $OUT/fashion_mnist_${name}_cls_30.json
  python tools/sample.py --ckpt $ck --n 1000 --steps 10 --seed 1 --threads 1 --no-progress --out $OUT/fashion_mnist_${name}_samples.npz
  python tools/evaluate.py --images $OUT/fashion_mnist_${name}_samples.npz --dataset fashion_mnist --data-root $DATA/fashion-mnist $F --out $OUT/fid_fashion_mnist_${name}.json
done
# the floor (real test images) and the ceiling (the clamp run's config, untrained), classifier FID;
# with FLOOR=1 in the environment
if [ -n "$FLOOR" ]; then
  python tools/evaluate.py --dataset fashion_mnist --real test --metrics cls_fid,cls_is $C --out $OUT/fashion_mnist_cls_real_test.json
  python tools/evaluate.py --ckpt $RUN --untrained --steps 10 --metrics cls_fid $C --out $OUT/fashion_mnist_cls_untrained10.json
fi
