"""Optional VisualDL (Paddle's TensorBoard) output of a training run: with `train.visualdl: true`
(or `--visualdl`) the scalars of each log.csv row and each sample grid also go to `<run>/vdl/`.
Needs the `visualdl` package (`pip install visualdl`, or `pip install -e .[vdl]`); without it
the run is refused before it starts, in one line. View with `visualdl --logdir RUN/vdl`."""
from __future__ import annotations

import math
import numbers
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from ebm_vae.utils.typed_yaml import ConfigError

MISSING = ("train.visualdl (--visualdl) needs the visualdl package, which is not installed: "
           "pip install visualdl (or pip install -e .[vdl]), or train without it")


def log_writer_class() -> Any:
    """VisualDL's `LogWriter`; a one-line ConfigError when the package is not installed."""
    try:
        from visualdl import LogWriter
    except ImportError:
        raise ConfigError(MISSING) from None
    return LogWriter


class VisualDLLog:
    """Writes a run's scalars and grids to `run_dir/vdl`. A write that fails is a warning, once,
    after which VisualDL output stops (log.csv and the PNGs are the run's record)."""

    def __init__(self, run_dir: Path):
        self.logdir = Path(run_dir) / "vdl"
        self.writer: Optional[Any] = log_writer_class()(logdir=str(self.logdir))

    def _guard(self, write: Any) -> None:
        if self.writer is None:
            return
        try:
            write(self.writer)
        except Exception as err:  # visualdl's own errors are not OSError only
            print(f"warning: VisualDL output to {self.logdir} stopped: {err}", file=sys.stderr)
            self.writer = None

    def scalars(self, row: dict[str, Any]) -> None:
        """One scalar per numeric, finite column of a log row, at step `row["iteration"]`."""
        step = int(row["iteration"])

        def write(w: Any) -> None:
            for key, value in row.items():
                if key == "iteration" or not isinstance(value, numbers.Real):
                    continue
                if math.isfinite(value):
                    w.add_scalar(tag=key, value=float(value), step=step)
        self._guard(write)

    def image(self, iteration: int, png: Path) -> None:
        """The sample grid saved at `png`, as the image `samples` at step `iteration`."""
        def write(w: Any) -> None:
            with Image.open(png) as im:
                w.add_image(tag="samples", img=np.asarray(im.convert("RGB")), step=iteration)
        self._guard(write)

    def close(self) -> None:
        self._guard(lambda w: w.close())
        self.writer = None
