"""results/ema.{csv,png}: the in-training classifier FID of the trained weights and of their moving
average (train.ema 0.99) on the same panel, one line each (run from the repository root):

    python results/ema_curves.py MNIST_RUN FASHION_RUN
e.g. python results/ema_curves.py runs/mnist_ema99 runs/fmnist_ema99
"""
import sys
from pathlib import Path
from ebm_vae.eval.curves import run_curves, write_curves

if len(sys.argv) != 3:
    sys.exit(__doc__)
rows = []
for name, run in (("mnist", Path(sys.argv[1])), ("fashion_mnist", Path(sys.argv[2]))):
    for kind in ("revised", "proposals"):
        for who, metric in (("weights", f"cls_fid_{kind}"), ("average", f"cls_fid_ema_{kind}")):
            for r in run_curves({f"{name}_{who}": run}, [metric]):
                rows.append(dict(r, metric=f"cls_fid_{kind}"))
write_curves(rows, Path("results/ema.csv"), Path("results/ema.png"))
print("results/ema", len(rows))
