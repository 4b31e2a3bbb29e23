#!/bin/bash
# Inception FID anchor: CIFAR-10 test (all 10,000) against train (all 50,000), one CPU
# thread per process, code of WORKTREE (6c43f94). The two splits' statistics are computed by two
# processes at once (phase train, phase test: tools/evaluate.py --stats, cached under
# ~/.cache/ebm_vae/fid_stats), then phase fid takes the Frechet distance of the two cached files.
set -x
P=$1; W=$2; V=$3; C=$4; A=$5   # usage: anchors50k.sh train|test|fid WORKTREE VENV CIFAR_FOLDERS OUT
cd $W; source $V/bin/activate
export PYTHONPATH=$W OMP_NUM_THREADS=1
case $P in
  train|test) python tools/evaluate.py --threads 1 --no-progress --stats cifar10 --data-root $C \
                --reference $P ;;
  fid) python - "$A/cifar_test10000_train50000.json" <<'PY'
import json, subprocess, sys
from ebm_vae.eval.fid_reference import check_weights, reference_key, reference_path
from ebm_vae.eval.inception import load_inception
from ebm_vae.eval.metrics import frechet_distance
net = load_inception()
paths = {s: reference_path(reference_key(net, "cifar10", s, None)) for s in ("test", "train")}
test, train = (check_weights(paths[s], net) for s in ("test", "train"))
code = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
out = {"fid": {"protocol": {"source": "real_test", "dataset": "cifar10", "num_samples": test.n,
                            "reference": "train", "code": code,
                            "command": "results/inception_anchors/anchors50k.sh (phases train, test, fid)"},
               "note": "FID Inception (pytorch-fid port of inception-2015-12-05), pool3 features",
               "real_test": frechet_distance(test, train),
               "statistics": {s: str(p) for s, p in paths.items()},
               "reference_images": train.n}}
json.dump(out, open(sys.argv[1], "w"), indent=2)
print(json.dumps(out, indent=2))
PY
  ;;
esac
