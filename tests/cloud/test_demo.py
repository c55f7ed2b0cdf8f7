"""`harken demo` end to end, for real: the drift alert, the data loop and the rollout must actually happen,
with the collector's default drift thresholds and the default rollout gates."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from cloud.broker import running_pid
from cloud.demo.story import DemoSettings
from tests.brokers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # about 6 minutes here, more under load


def test_demo_alerts_after_the_injection_retrains_on_field_samples_and_leaves_nothing_running(tmp_path):
    work = tmp_path / "demo"
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", "demo", "--workdir", str(work), "--per-word", "24",
         "--exit-after-story", "--duration", "1300", "--http-port", str(port), "--json"],
        capture_output=True, text=True, timeout=1400, env={**os.environ, "HARKEN_LOG_LEVEL": "WARNING"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    progress = proc.stderr
    alert, rollout, field, quality = outcome["alert"], outcome["rollout"], outcome["field_samples"], outcome["quality"]

    # the alert: fleet-wide, with evidence, dated at the injection (its onset is the start of the
    # drift step that holds the injection, so at most one step early), never on the healthy warm-up
    assert alert is not None, progress[-3000:]
    assert alert["cohort"] == "fleet" and alert["signal"] in ("input", "output"), alert
    assert alert["evidence"]["top"], "an alert carries the signals that raised it"
    step = DemoSettings(workdir=work).drift_step_s
    assert -step <= alert["onset_after_injection_s"] <= 6 * step, alert

    # the loop: labelled field samples from after the injection went into kws:2's data
    assert field["labelled"] == DemoSettings(workdir=work).field_samples, field
    with zipfile.ZipFile(work / "models" / "kws-2.hkb") as z:
        lineage = json.loads(z.read("manifest.json"))["lineage"]
    parts = lineage["dataset"]["lineage"]["parts"]
    assert len(parts) == 2 and any(p["path"].endswith("field") for p in parts), lineage["dataset"]
    assert sum(len(v) for v in lineage["sample_ids"].values()) > 0, "training records the field samples it used"

    # both models measured on the drifted fleet: the loop raised accuracy there, beyond the noise of
    # the measurement, and the gates promoted the better model (the outcome matches the quality)
    assert quality["kws:1"]["answers"] > 0 and quality["kws:2"]["answers"] > 0, quality
    assert quality["gain"]["low"] > 0, quality
    assert "the data loop changed accuracy on the drifted fleet by +" in progress
    assert rollout is not None and rollout["status"] == "completed", progress[-3000:]
    assert rollout["reason"], "every rollout outcome says why"

    assert outcome["dashboard"].startswith(f"http://127.0.0.1:{port}/#token=")
    assert "stopped; nothing is left running" in progress
    assert running_pid(work / "broker") is None
    leftovers = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes still running: {leftovers}"
