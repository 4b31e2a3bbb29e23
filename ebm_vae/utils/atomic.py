"""One way to write a file: atomically. Every writer of the project goes through `atomic_write`.

The data go to a temporary file beside the target, are flushed and fsynced, and the temporary file
is renamed over the target, so a reader (or a later resume) sees the old file or the new one,
never a torn one. On any failure the temporary file is removed and the old file stays intact; an
OSError (a full disk, a read-only folder) becomes a one-line `WriteError`.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
import tempfile
from typing import IO, Iterator

from ebm_vae.errors import UserError


class WriteError(UserError, OSError):
    """A file could not be written (e.g. no space left on device); nothing was replaced."""


def fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _file_mode(path: Path) -> int:
    """The mode of the file being replaced, else 0666 less the umask (as open() creates)."""
    with contextlib.suppress(OSError):
        return path.stat().st_mode & 0o777
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """`with atomic_write(path, "wb") as fh: ...` writes `path` atomically (text mode: UTF-8, no
    newline translation, as the csv module wants). Creates the parent folder."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, _file_mode(path))  # mkstemp makes 0600; give what open() would
        text = {} if mode == "wb" else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **text) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as err:
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from err
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)
