"""The user cache of files too big (or too machine-specific) for the repository: converted
Inception weights, FID reference statistics, and the hashes of large files.

It is `$EBM_VAE_CACHE`, else `$XDG_CACHE_HOME/ebm_vae`, else `~/.cache/ebm_vae`.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ebm_vae.utils.atomic import write_text

CACHE_ENV = "EBM_VAE_CACHE"
HASHES_FILE = "file_hashes.json"


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ebm_vae"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, hashed once: remembered in the cache keyed by the resolved path,
    modification time and size, and hashed again when any of them changes."""
    path = Path(path).resolve()
    stat = path.stat()
    stamp = {"mtime_ns": stat.st_mtime_ns, "size": stat.st_size}
    memo_file = cache_dir() / HASHES_FILE
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: start afresh
        memo = {}
    entry = memo.get(str(path), {})
    if {k: entry.get(k) for k in stamp} == stamp and "sha256" in entry:
        return entry["sha256"]
    memo[str(path)] = {**stamp, "sha256": _sha256(path)}
    write_text(memo_file, json.dumps(memo, indent=1, sort_keys=True) + "\n")
    return memo[str(path)]["sha256"]
