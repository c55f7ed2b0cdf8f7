"""`harken demo` end to end, for real: the drift alert and the rollout must actually happen."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cloud.broker import running_pid
from tests.brokers import free_port

pytestmark = pytest.mark.slow


def test_demo_raises_the_drift_alert_runs_the_canary_and_leaves_nothing_running(tmp_path):
    work = tmp_path / "demo"
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", "demo", "--workdir", str(work), "--per-word", "24", "--devices", "4",
         "--exit-after-story", "--duration", "560", "--http-port", str(port), "--json"],
        capture_output=True, text=True, timeout=1200, env={**os.environ, "HARKEN_LOG_LEVEL": "WARNING"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    progress = proc.stderr
    alert, rollout = outcome["alert"], outcome["rollout"]
    assert alert is not None, progress[-3000:]
    assert alert["cohort"] == "fleet" and alert["signal"] in ("input", "output"), alert
    assert alert["evidence"]["top"], "an alert carries the signals that raised it"
    assert rollout is not None and rollout["status"] in ("completed", "rolled_back"), progress[-3000:]
    assert rollout["reason"], "every rollout outcome says why"
    assert outcome["dashboard"].startswith(f"http://127.0.0.1:{port}/#token=")
    assert "stopped; nothing is left running" in progress
    assert running_pid(work / "broker") is None
    leftovers = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes still running: {leftovers}"
    assert (work / "models" / "kws-2.hkb").exists() and (work / "logs" / "collector.log").exists()
