"""bench/gpu_check.py (the prepared GPU check): without a GPU it says so in one line and exits 0."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import paddle
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0,
                    reason="a GPU is visible: the fallback is not taken")
def test_gpu_check_without_gpu_prints_one_line_and_exits_0():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gpu_check: this Paddle sees no GPU"), done.stdout
