"""The fresh 2,000-vs-5,000 Inception FIDs of the long run against iterations: reads
fresh_iter<N>[_ema|_shipped].json here, writes fresh_curve.csv and fresh_curve.png.

    python results/cifar10_inception/long_run/fresh_curve.py
"""
import json
import re
from pathlib import Path

from ebm_vae.eval.curves import write_curves

HERE = Path(__file__).resolve().parent


def main() -> None:
    rows = []
    for path in sorted(HERE.glob("fresh_iter*.json")):
        iteration, kind = re.fullmatch(r"fresh_iter(\d+)(_\w+)?", path.stem).groups()
        config = "weight average" if kind == "_ema" else "trained weights"
        fid = json.loads(path.read_text())["fid"]
        for metric, value in (("fid_revised", fid["images"]), ("fid_proposals", fid["proposals"])):
            rows.append({"config": config, "iteration": int(iteration), "metric": metric, "value": value})
    rows.sort(key=lambda r: (r["config"], r["metric"], r["iteration"]))
    write_curves(rows, HERE / "fresh_curve.csv", HERE / "fresh_curve.png")


if __name__ == "__main__":
    main()
