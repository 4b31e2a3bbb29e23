"""One process at a time in a run folder: an exclusive `fcntl.flock` on a lock file, held while the
process trains the run. The file holds the holder's pid and start time for the refusal message; the
OS drops the lock when the holder exits or is killed, so a lock file left behind never blocks."""
from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from ebm_vae.errors import UserError

LOCK_FILE = ".lock"  # inside the run folder


class FolderInUse(UserError):
    """Another process holds the lock of a run folder."""


class NotAFolder(UserError):
    """A run folder's path cannot be a folder: a file is there or above it, or it is not writable."""


def _open_lock(path: Path) -> int:
    """Open (creating it and its folder) the lock file `path`; one-line NotAFolder if it cannot be."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        file = next((p for p in (folder, *folder.parents) if p.exists()), None)
        why = (f"{file} is a file" if file is not None and not file.is_dir()
               else err.strerror or str(err))
        raise NotAFolder(f"{folder} cannot be a run folder: {why}; nothing was written. Give "
                         "--out a folder (new or a run's)") from None


def _holder(fd: int) -> str:
    """'process PID (started TIME)' as the holder wrote it, or 'another process'."""
    os.lseek(fd, 0, os.SEEK_SET)
    pid, _, started = os.read(fd, 200).decode(errors="replace").strip().partition(" ")
    return f"process {pid} (started {started})" if pid.isdigit() else "another process"


@contextlib.contextmanager
def hold(path: str | Path, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created, with its folder, if missing) for the
    block. If another process holds it: raise FolderInUse naming that process, or with `wait`,
    say so on stderr and block until it lets go."""
    path = Path(path)
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise FolderInUse(f"{path.parent} is in use by {_holder(fd)}; nothing was "
                                  "changed. Wait for it to end (or stop it: it saves a "
                                  f"checkpoint), then --resume {path.parent}; or train into "
                                  "another --out folder") from None
            print(f"waiting: {path.parent} is in use by {_holder(fd)}", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_lock(run_dir: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold RUN_DIR/.lock for the block (a trainer's lifetime): a second trainer of the folder is
    refused. `enabled=False` (data-parallel workers other than rank 0): no lock, as worker 0
    holds it for the run. If the block leaves the folder empty (a start that failed, e.g. on
    missing data), the lock file it created goes again, and so does the folder if it made it."""
    if not enabled:
        yield
        return
    run_dir = Path(run_dir)
    fresh, new_lock = not run_dir.exists(), not (run_dir / LOCK_FILE).exists()
    try:
        with hold(run_dir / LOCK_FILE):
            yield
    finally:
        if new_lock and run_dir.is_dir() and [p.name for p in run_dir.iterdir()] == [LOCK_FILE]:
            (run_dir / LOCK_FILE).unlink()
            if fresh:
                run_dir.rmdir()
