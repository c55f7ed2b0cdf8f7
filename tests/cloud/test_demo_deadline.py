"""`harken demo --duration` is a hard deadline: it ends the story mid-way and leaves nothing running."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from cloud.broker import running_pid
from tests.brokers import free_port


def test_the_duration_stops_the_demo_while_it_still_prepares(tmp_path):
    work = tmp_path / "demo"
    started = time.monotonic()
    # a fresh work folder: the demo first synthesizes a dataset, which takes far longer than 3 s
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", "demo", "--workdir", str(work), "--per-word", "40", "--devices", "1",
         "--duration", "3", "--http-port", str(free_port())],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HARKEN_LOG_LEVEL": "WARNING"})
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "--duration 3 s is up" in out and "stopped; nothing is left running" in out, out[-3000:]
    assert "drift alert" not in out.lower()  # it stopped before the story reached the fleet
    assert elapsed < 40, f"the demo took {elapsed:.0f} s to honour --duration 3"
    assert running_pid(work / "broker") is None
    leftovers = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes still running: {leftovers}"
