"""Stopping a training run on SIGINT / SIGTERM: the first signal lets the iteration finish, then
the run saves and stops; a second one abandons the iteration at once where that is safe."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ebm_vae.errors import Stopped, UserError


class TrainingError(UserError, RuntimeError):
    """Training stopped: a non-finite quantity, or a run folder that cannot be used."""


class Interrupted(TrainingError, Stopped):
    """Training stopped on SIGINT or SIGTERM after saving a checkpoint; `exit_code` is
    128 + the signal number (130, 143). A TrainingError, so tools that catch only that still
    print its one line."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path, run_dir: Path):
        name = signal.Signals(signum).name
        super().__init__(f"{name}: stopped after iteration {iteration}, checkpoint saved in "
                         f"{checkpoint}; continue with --resume {run_dir} (and --max-iters, as before)")
        self.signum, self.exit_code = signum, 128 + signum


class Abandon(BaseException):
    """Raised inside an iteration by a second signal: the iteration is dropped."""


class StopSignals:
    """SIGINT / SIGTERM during training: the first one lets the current iteration finish, then
    the trainer saves and stops; a second one abandons the iteration at once (its state is not
    saved, the one before it is). Installed only in the main thread of a single process."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self.in_step = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            print(f"\n{signal.Signals(signum).name}: finishing this iteration, then saving a "
                  "checkpoint (send it again to stop at once)", file=sys.stderr, flush=True)
        elif self.in_step:
            raise Abandon()

    @contextlib.contextmanager
    def abandonable(self) -> Any:
        """The part of an iteration that a second signal may abandon (it changes no state that
        the caller cannot restore)."""
        self.in_step = True
        try:
            yield
        finally:
            self.in_step = False
