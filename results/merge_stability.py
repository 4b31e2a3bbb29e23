"""Replace the rows of one config name in results/stability{,_diagnostics}.csv with the rows of a
run folder, keep every other run's rows, and redraw the PNGs (run from the repository root):

    python results/merge_stability.py NAME RUN_DIR
e.g. python results/merge_stability.py fashion_l10_langevin_clamp runs/fmnist_clamp
"""
import csv, sys
from pathlib import Path
from ebm_vae.eval.curves import run_curves, write_curves

if len(sys.argv) != 3:
    sys.exit(__doc__)
name, run = sys.argv[1], Path(sys.argv[2])
for out, metrics, every, logs in (
        ("results/stability", ["cls_fid_revised", "cls_fid_proposals"], 1, []),
        ("results/stability_diagnostics", ["energy_gap", "f_revised", "ebm_weight_norm", "chain_move",
                                           "revised_abs_max", "langevin_grad_rms"], 25,
         ["energy_gap", "f_revised"])):
    with open(out + ".csv") as fh:
        rows = [dict(r, iteration=int(r["iteration"]), value=float(r["value"]))
                for r in csv.DictReader(fh) if r["config"] != name]
    rows += run_curves({name: run}, metrics, every)
    write_curves(rows, Path(out + ".csv"), Path(out + ".png"), logs)
    print(out, len(rows))
