"""scripts/chaos.py: a short real run loses nothing and says so; its ledger and verdict count right
and refuse a run that measured nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from chaos_count import SpoolReport, ledger, verdict  # noqa: E402
from chaos_faults import KINDS  # noqa: E402

ALL_UP = {"total": 2, "alive": 2, "connected": 2}


def test_a_short_chaos_run_with_every_fault_loses_and_duplicates_nothing(tiny_lab):
    """Two real agents, the secured broker, a collector on PostgreSQL; one fault at a time so that
    each kind surely fires and takes effect within 30 s (the 15-minute run overlaps them)."""
    cmd = [sys.executable, "scripts/chaos.py", "--minutes", "0.5", "--agents", "2", "--window-s", "1",
           "--fault-every-s", "2", "--down-s", "1,2", "--full-s", "3,4", "--stall-s", "3,4", "--max-concurrent", "1",
           "--resend-s", "2", "--drain-timeout-s", "60", "--data", str(tiny_lab.data_dir),
           "--model", str(tiny_lab.released_bundle_path), "--trust-key", str(tiny_lab.public_key_path),
           "--release-key", str(tiny_lab.release_public_key_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["ok"], (out, proc.stderr[-3000:])
    w = out["windows"]
    assert w["windows_stored"] == w["windows_produced"] > 0
    assert w["lost"] == w["duplicates"] == w["extra"] == w["unsent"] == 0
    assert {k: out["agents"][k] for k in ALL_UP} == ALL_UP and out["unexpected_exits"] == []
    assert set(out["faults"]) == set(KINDS)
    assert all(f["effective"] >= 1 for f in out["faults"].values()), out["faults"]
    assert out["collector_rss_mb"]["start"] > 0 and out["collector_rss_mb"]["end"] > 0


def test_the_ledger_counts_lost_duplicated_extra_and_unsent_windows():
    spools = {"a": SpoolReport(last_seq=4, unsent=(4,)), "b": SpoolReport(last_seq=1)}
    stored = [("a", 1, 0), ("a", 1, 1), ("a", 2, 1), ("a", 2, 2),  # a1 twice: under two boots
              ("b", 3, 0), ("b", 3, 1), ("b", 3, 7)]  # b7 was never produced
    got = ledger(spools, stored)
    assert {k: got[k] for k in ("windows_produced", "windows_stored", "lost", "duplicates", "extra", "unsent")} \
        == {"windows_produced": 7, "windows_stored": 7, "lost": 1, "duplicates": 1, "extra": 1, "unsent": 1}
    assert got["lost_examples"] == [("a", 3)]  # a4 is still in a's spool: not lost


def test_the_verdict_refuses_a_run_that_measured_nothing_and_fails_a_lossy_one():
    nothing = ledger({"a": SpoolReport(last_seq=-1)}, [])
    faults = {"broker": {"fired": 0, "effective": 0}, "db_stall": {"fired": 2, "effective": 0},
              "agent": {"fired": 1, "effective": 1}}
    v = verdict(nothing, faults, ALL_UP, [])
    assert not v.ok and len(v.refused) == 3 and v.failed == []
    assert "no window was stored" in v.refused[0] and "broker never fired" in v.refused[1]
    assert "db_stall fired 2 time(s) but never took effect" in v.refused[2]

    lossy = ledger({"a": SpoolReport(last_seq=2)}, [("a", 1, 0), ("a", 1, 2)])
    v = verdict(lossy, {"agent": {"fired": 1, "effective": 1}}, {"total": 2, "alive": 2, "connected": 1},
                [{"process": "collector", "code": -11}])
    assert v.refused == [] and v.failed == ["1 window(s) lost", "2 of 2 agents alive, 1 connected",
                                            "1 process(es) exited without a fault: collector"]
    fine = ledger({"a": SpoolReport(last_seq=1)}, [("a", 1, 0), ("a", 1, 1)])
    assert verdict(fine, {"agent": {"fired": 1, "effective": 1}}, ALL_UP, []).ok
