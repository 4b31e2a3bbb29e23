"""The progress bar's rate and ETA, on a fake clock."""
from __future__ import annotations

import io

import ebm_vae.utils.progress as progress


def test_rate_is_timed_from_construction_and_counts_only_new_items(monkeypatch):
    clock = iter([100.0, 106.0])  # constructed at t=100, first update at t=106
    monkeypatch.setattr(progress.time, "time", lambda: next(clock))
    out = io.StringIO()
    bar = progress.Progress(10, desc="run", stream=out, initial=4)  # resumed at item 4
    bar.update(7, force=True)  # 3 new items in 6 s: 2 s each, 3 items left
    assert out.getvalue() == "run [##############------] 7/10  | 2.00 s/it eta 0.1 min\n"
