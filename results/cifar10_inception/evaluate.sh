#!/bin/bash
# Inception FID of checkpoints of the reduced CIFAR-10 run, the anchors' protocol:
# 2,000 revised samples (10 Langevin steps, seed 1) vs 5,000 train images (a fixed seeded choice),
# one CPU thread. Run from a checkout of the evaluating commit; RUN = the run folder.
# usage: evaluate.sh RUN CIFAR_FOLDERS OUT ITER [ITER ...]
set -ex
RUN=$1; C=$2; OUT=$3; shift 3
mkdir -p $OUT
for it in "$@"; do
  ck=$RUN/checkpoints/iter_$(printf %07d $it)
  python tools/sample.py --ckpt $ck --n 2000 --steps 10 --seed 1 --proposals --threads 1 --no-progress --out $OUT/iter$it.npz
  python tools/evaluate.py --images $OUT/iter$it.npz --dataset cifar10 --data-root $C --metrics fid --n 2000 --reference train --reference-n 5000 --threads 1 --no-progress --out $OUT/fid_iter$it.json
done
# the curve: OUT/curve.csv (config, iteration, metric, value) and OUT/curve.png; iteration 0 is the
# untrained model of results/inception_anchors (same protocol), if copied to OUT/fid_iter0.json
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from ebm_vae.eval.curves import write_curves
out = Path(sys.argv[1]); rows = []
for f in sorted(out.glob("fid_iter*.json"), key=lambda p: int(p.stem[8:])):
    d = json.loads(f.read_text())["fid"]
    revised = d["images"] if "images" in d else d["revised"]  # a sample file | a model (anchors)
    for value, name in ((revised, "fid_revised"), (d["proposals"], "fid_proposals")):
        rows.append({"config": "cifar10_cpu_clamp", "iteration": int(f.stem[8:]), "metric": name, "value": value})
write_curves(rows, out / "curve.csv", out / "curve.png")
PY
