"""The reports of a table: results/table<id>.md and .csv (our value beside the paper's, the
setting and the protocol per run) and, for a sweep, a PNG plot."""
from __future__ import annotations

import csv
import io
import math
from collections import Counter
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
# metric -> the plotted columns, one panel per inner list (revised samples and proposals apart:
# their FIDs differ tenfold; a completion's baseline beside ours)
PANELS = {"fid": [["revised"], ["proposals"]], "cls_fid": [["revised"], ["proposals"]],
          "is": [["revised"], ["proposals"]], "cls_is": [["revised"], ["proposals"]],
          "recon": [["psnr_revised", "psnr_decoded"]], "completion": [["psnr_hole", "psnr_hole_harmonic"]]}


@dataclass(frozen=True)
class Row:
    """One trained run (a table row at one seed): {metric: its COLUMNS values}, the paper's value,
    setting and protocol."""
    label: str
    setting: str
    values: dict
    paper: Optional[float]
    protocol: str
    group: Optional[str] = None
    x: Optional[float] = None
    seed: Optional[int] = None
    trained_with: str = "not recorded"  # commits (utils.provenance.run_code)
    evaluated_with: str = "not recorded"


def by_label(rows: list[Row]) -> list[list[Row]]:
    """The rows of each table row (its seeds), in table order."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.label, []).append(r)
    return list(groups.values())


def spread(values: list[float]) -> tuple[float, float, float, float]:
    """(mean, sample standard deviation (0 for one value), min, max) of the finite values."""
    v = [x for x in values if isinstance(x, (int, float)) and math.isfinite(x)]
    if not v:
        return (math.nan,) * 4
    mean = sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return mean, std, min(v), max(v)


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
    "completion": "Hole-only PSNR / SSIM / L1 on the test split (our design: README: Image completion; docs/method.md §5).",
}


def _cell(rows: list[Row], metric: str, key: str) -> str:
    values = [r.values.get(metric, {}).get(key) for r in rows]
    if len(rows) == 1 or any(v is None for v in values):
        return _fmt(values[0]) if len(rows) == 1 else "n/a"
    mean, std, _, _ = spread(values)
    return f"{mean:.4g} ± {std:.2g}"


def _commits(rows: list[Row], field: str) -> str:
    """'a1b2c3d (12 runs)'-style summary of one provenance field over the runs."""
    counts = Counter(getattr(r, field) for r in rows)
    return "; ".join(f"{c} ({n} run{'s' * (n != 1)})" for c, n in counts.items())


def render_markdown(spec: TableSpec, scale_name: str, metrics: list[str], rows: list[Row],
                    made_by: str = "", missing: list[str] = ()) -> str:
    """One line per table row; over several seeds a value is mean ± sample std over the seeds."""
    cols = [(m, k, h) for m in metrics for k, h in COLUMNS[m]]
    head = ["run", "setting", "seeds", *[h for _, _, h in cols], f"paper ({spec.metric})", "protocol"]
    notes = " ".join(METRIC_NOTES[m] for m in metrics)
    lines = [f"# Table {spec.id}: {spec.title}", "",
             f"Scale `{scale_name}`; metrics {', '.join(f'`{m}`' for m in metrics)}. {notes}", ""]
    if made_by:
        commits = (f" Runs trained with commit {_commits(rows, 'trained_with')}; evaluated with "
                   f"commit {_commits(rows, 'evaluated_with')} (per run in the .csv)." if rows else "")
        lines += [f"Made by {made_by}.{commits}", ""]
    if any(len(g) > 1 for g in by_label(rows)):
        lines += ["With several seeds a value is the mean ± the sample standard deviation over "
                  "the seeds; the .csv file has every seed's value.", ""]
    if missing:
        lines += [f"**Incomplete: {len(missing)} run{'s' * (len(missing) != 1)} not in this report "
                  f"yet**: {'; '.join(missing)}.", ""]
    if spec.notes:
        lines += [spec.notes.strip(), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group in by_label(rows):
        r = group[0]
        seeds = ", ".join("-" if g.seed is None else str(g.seed) for g in group)
        cells = [r.label, r.setting, seeds, *[_cell(group, m, k) for m, k, _ in cols], _fmt(r.paper),
                 r.protocol]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render_csv(metrics: list[str], rows: list[Row]) -> str:
    """One line per run and seed; a value's column is <metric>.<key>."""
    keys = [(m, k) for m in metrics for k, _ in COLUMNS[m]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "seed", "group", "x", "setting", *[f"{m}.{k}" for m, k in keys], "paper",
                "protocol", "trained_with", "evaluated_with"])
    for r in rows:
        w.writerow([r.label, "" if r.seed is None else r.seed, r.group or "",
                    "" if r.x is None else r.x, r.setting,
                    *[r.values.get(m, {}).get(k, "") for m, k in keys],
                    "" if r.paper is None else r.paper, r.protocol, r.trained_with,
                    r.evaluated_with])
    return buf.getvalue()


def plot_panels(metrics: list[str], rows: list[Row]) -> list[tuple[str, dict]]:
    """One panel per metric, PANELS entry and swept group: each column's mean over seeds vs x,
    the lowest and highest seed where there are several, and the paper's values, if any."""
    panels = []
    groups = [g for g in by_label(rows) if g[0].group is not None]
    for metric in metrics:
        for keys in PANELS[metric]:
            for name in dict.fromkeys(g[0].group for g in groups):
                pts = sorted((g for g in groups if g[0].group == name), key=lambda g: g[0].x)
                xs, seeds = [g[0].x for g in pts], any(len(g) > 1 for g in pts)
                series = {}
                for k in keys:
                    stats = [spread([r.values.get(metric, {}).get(k, math.nan) for r in g])
                             for g in pts]
                    series[PLOTTED[k] + (", mean over seeds" if seeds else "")] = (
                        xs, [s[0] for s in stats])
                    if seeds:
                        series[f"{PLOTTED[k]}, lowest seed"] = (xs, [s[2] for s in stats])
                        series[f"{PLOTTED[k]}, highest seed"] = (xs, [s[3] for s in stats])
                known = [g[0] for g in pts if g[0].paper is not None]
                if known and COLUMNS[metric][0][0] in keys:  # the paper's is the table's value
                    series["paper"] = ([r.x for r in known], [r.paper for r in known])
                panels.append((f"{metric} vs {name}" + (f" ({PLOTTED[keys[0]]})" if len(keys) == 1
                                                         else ""), series))
    return panels


def write_report(spec: TableSpec, scale_name: str, metrics: list[str], rows: list[Row],
                 out_dir: Path, made_by: str = "", missing: list[str] = ()) -> list[Path]:
    """results/table<id>.md and .csv, and table<id>.png for sweeps; returns the paths written."""
    stem = out_dir / f"table{spec.id}"
    written = []
    for suffix, text in ((".md", render_markdown(spec, scale_name, metrics, rows, made_by, missing)),
                         (".csv", render_csv(metrics, rows))):
        path = stem.with_suffix(suffix)
        write_text(path, text)
        written.append(path)
    panels = plot_panels(metrics, rows)
    if panels:
        save_plots(stem.with_suffix(".png"), panels, xlabel="swept value")
        written.append(stem.with_suffix(".png"))
    return written
