"""``benchmarks/device_check.py`` on a machine without CUDA: one line saying so, exit status 0, nothing measured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "device_check.py"


def test_without_cuda_the_check_says_so_and_exits_0(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no device, even on a GPU machine
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "k")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("device_check: no CUDA device here")
    assert "nothing measured" in lines[0]
    assert not (tmp_path / "k").exists()  # no sweep was started
