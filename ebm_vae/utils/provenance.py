"""Which code produced a run or a number: the git commit of the ebm_vae source, Paddle's version
and the command, recorded in each run folder (`provenance.json`, one entry per start or resume)
so a table's report can name the commit its runs were trained with."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import paddle

from ebm_vae.utils.atomic import write_text

PROVENANCE = "provenance.json"
UNKNOWN = "unknown (not a git checkout)"
SOURCE = Path(__file__).resolve().parents[2]  # the folder holding ebm_vae/ (a checkout, if any)


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(SOURCE), *args], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version() -> str:
    """The commit of the ebm_vae source ('<sha>', or '<sha>+changes' when tracked files differ
    from it), or UNKNOWN outside a git checkout (e.g. a wheel install)."""
    sha = _git("rev-parse", "HEAD")
    if not sha:
        return UNKNOWN
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", "ebm_vae", "tools")
    return sha + ("+changes" if changed else "")


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python",
                     *sys.argv[1:]])


def record_start(run_dir: str | Path, resumed_from: Optional[int]) -> None:
    """Add {time, code, paddle, command, resumed_from} to the run's provenance.json: appended on
    a resume (`resumed_from` = the checkpoint's iteration), a new list on a fresh start (None)."""
    path = Path(run_dir) / PROVENANCE
    entries = read_provenance(run_dir) if resumed_from is not None else []
    entries.append({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "code": code_version(), "paddle": paddle.__version__,
                    "command": command_line(), "resumed_from": resumed_from})
    write_text(path, json.dumps(entries, indent=2) + "\n")


def read_provenance(run_dir: str | Path) -> list[dict]:
    """The run's entries, oldest first; [] if none was recorded (or the file is unreadable)."""
    path = Path(run_dir) / PROVENANCE
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return entries if isinstance(entries, list) else []


def run_code(run_dir: str | Path) -> str:
    """The commits a run was trained with, in order ('a1b2c3d' or 'a1b2c3d, e4f5a6b'), short;
    'not recorded' for runs made before provenance was kept."""
    codes = list(dict.fromkeys(str(e.get("code", "?")) for e in read_provenance(run_dir)))
    return ", ".join(short(c) for c in codes) if codes else "not recorded"


def short(code: str) -> str:
    """'<7 hex>[+changes]' for a recorded commit; other strings unchanged."""
    sha, plus, rest = code.partition("+")
    if len(sha) == 40 and all(ch in "0123456789abcdef" for ch in sha):
        return sha[:7] + plus + rest
    return code
