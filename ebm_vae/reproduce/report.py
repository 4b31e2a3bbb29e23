"""The reports of a table: results/table<id>.md and .csv (our value beside the paper's, the
setting and the protocol per run) and, for a sweep, a PNG plot."""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ebm_vae.reproduce.spec import RunSpec, TableSpec
from ebm_vae.utils.atomic import write_text
from ebm_vae.utils.images import save_plots

# metric -> report columns (key, header); the first is the table's value (and the plot's y)
COLUMNS = {
    "fid": [("revised", "FID (revised samples)"), ("proposals", "FID (VAE proposals)")],
    "is": [("revised", "IS (revised samples)"), ("revised_std", "IS std"),
           ("proposals", "IS (VAE proposals)")],
    "cls_fid": [("revised", "classifier FID (revised samples)"),
                ("proposals", "classifier FID (VAE proposals)")],
    "cls_is": [("revised", "classifier IS (revised samples)"), ("revised_std", "std"),
               ("proposals", "classifier IS (VAE proposals)")],
    "recon": [("psnr_revised", "PSNR dB (revised)"), ("psnr_decoded", "PSNR dB (decoded)"),
              ("mse_revised", "MSE (revised)"), ("mse_decoded", "MSE (decoded)")],
    "completion": [("psnr_hole", "PSNR hole dB"), ("ssim_hole", "SSIM hole"), ("l1_hole", "L1 hole"),
                   ("psnr_hole_harmonic", "PSNR hole dB (harmonic baseline)")],
}
PLOTTED = {"revised": "revised", "proposals": "VAE proposals", "psnr_revised": "revised",
           "psnr_decoded": "decoded", "psnr_hole": "ours", "psnr_hole_harmonic": "harmonic"}


@dataclass(frozen=True)
class Row:
    """One reported run: our values (COLUMNS of the metric), the paper's value, setting, protocol."""
    label: str
    setting: str
    values: dict
    paper: Optional[float]
    protocol: str
    group: Optional[str] = None
    x: Optional[float] = None


def setting(run: RunSpec) -> str:
    return ", ".join(run.set) if run.set else "base setting"


def _fmt(v: Any) -> str:
    if v is None:
        return "not recovered"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


METRIC_NOTES = {
    "cls_fid": "Offline stand-in for FID: classifier-feature FID (ebm_vae/eval/classifier.py). NOT "
               "comparable to the paper's Inception FID; compare the rows with each other.",
    "cls_is": "Offline stand-in for the Inception Score: the same formula on the small MNIST-style "
              "classifier's 10 classes (at most 10). NOT comparable to the paper's IS; compare the "
              "rows with each other.",
    "fid": "FID with the pytorch-fid Inception port vs the whole training split (lower is better).",
    "is": "Inception Score, 10 splits (higher is better).",
    "recon": "Test images -> encoder mean -> decoder -> Langevin; PSNR on [0, 1] (higher is better).",
    "completion": "Hole-only PSNR / SSIM / L1 on the test split (our design, README_completion).",
}


def render_markdown(spec: TableSpec, scale_name: str, metric: str, rows: list[Row]) -> str:
    cols = COLUMNS[metric]
    head = ["run", "setting", *[h for _, h in cols], f"paper ({spec.metric})", "protocol"]
    lines = [f"# Table {spec.id}: {spec.title}", "",
             f"Scale `{scale_name}`; metric `{metric}`. {METRIC_NOTES[metric]}", ""]
    if spec.notes:
        lines += [spec.notes.strip(), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.label, r.setting, *[_fmt(r.values.get(k)) for k, _ in cols], _fmt(r.paper), r.protocol]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render_csv(metric: str, rows: list[Row]) -> str:
    keys = [k for k, _ in COLUMNS[metric]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "group", "x", "setting", "metric", *keys, "paper", "protocol"])
    for r in rows:
        w.writerow([r.label, r.group or "", "" if r.x is None else r.x, r.setting, metric,
                    *[r.values.get(k, "") for k in keys], "" if r.paper is None else r.paper, r.protocol])
    return buf.getvalue()


def plot_panels(metric: str, rows: list[Row]) -> list[tuple[str, dict]]:
    """One panel per swept group: the plotted columns (and the paper's values, if any) vs x."""
    panels = []
    for group in dict.fromkeys(r.group for r in rows if r.group is not None):
        pts = sorted((r for r in rows if r.group == group), key=lambda r: r.x)
        series = {PLOTTED[k]: ([r.x for r in pts], [float(r.values.get(k, math.nan)) for r in pts])
                  for k, _ in COLUMNS[metric] if k in PLOTTED}
        known = [r for r in pts if r.paper is not None]
        if known:
            series["paper"] = ([r.x for r in known], [r.paper for r in known])
        panels.append((f"{metric} vs {group}", series))
    return panels


def write_report(spec: TableSpec, scale_name: str, metric: str, rows: list[Row], out_dir: Path
                 ) -> list[Path]:
    """results/table<id>.md and .csv, and table<id>.png for sweeps; returns the paths written."""
    stem = out_dir / f"table{spec.id}"
    written = []
    for suffix, text in ((".md", render_markdown(spec, scale_name, metric, rows)),
                         (".csv", render_csv(metric, rows))):
        path = stem.with_suffix(suffix)
        write_text(path, text)
        written.append(path)
    panels = plot_panels(metric, rows)
    if panels:
        save_plots(stem.with_suffix(".png"), panels, xlabel="swept value")
        written.append(stem.with_suffix(".png"))
    return written
