"""Kernel safety: every kernel variant on buffers that end at a guard page (run in a
subprocess, so an out-of-bounds access fails this test instead of the whole run)."""

import subprocess
import sys
from pathlib import Path


def test_kernels_stay_inside_their_buffers():
    script = Path(__file__).with_name("guard_pages.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert "guard pages: 0 mismatches" in result.stdout
