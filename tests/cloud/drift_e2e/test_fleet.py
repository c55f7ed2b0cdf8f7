"""One dead microphone among healthy devices: its own device alert, attributed to it, no fleet alert."""
from __future__ import annotations

import pytest

from edge.sim.scenarios import Identity
from tests.cloud.drift_e2e.rig import WINDOW_S
from tests.cloud.drift_e2e.rooms import Room

DEVICES = {"dev-a": 601, "dev-b": 602, "dev-c": 603, "dev-d": 604}
BROKEN = "dev-c"


@pytest.mark.parametrize("fault", ["silence", "dc"])
def test_one_dead_microphone_raises_its_own_device_alert_and_no_fleet_alert(world, rig, tmp_path, fault):
    onset, n = 5, 8
    rooms = {d: Room(world.pool, world.reference_voices,
                     world.channel("broken-device", onset, fault=fault) if d == BROKEN else Identity(),
                     n * WINDOW_S, seed=seed) for d, seed in DEVICES.items()}
    rig.play(rooms, tmp_path / "agents")
    dead = [w for w in rig.windows() if w["device"] == BROKEN and w["t_start"] >= world.t0 + onset * WINDOW_S]
    assert dead and all(w["software"]["utterances"] == 0 for w in dead)  # the gate hears nothing at all
    seen = rig.sweep(range(1, n + 1))
    assert set(seen) == {(f"device:{BROKEN}", "input")}, f"alerts {sorted(seen)}"
    step, alert = seen[(f"device:{BROKEN}", "input")]
    onset_step = (alert.onset_t - world.t0) / WINDOW_S
    top = alert.evidence["top"][0]
    print(f"\ndead microphone ({fault}): flagged after {step - onset} dead window(s), pattern {alert.pattern}, "
          f"onset step {onset_step:.0f} (true {onset}), top {top['signal']} score {top['score']:.2f}, "
          f"timings {rig.timings}")
    assert 1 <= step - onset <= 3 and alert.pattern == "sudden" and onset - 1 <= onset_step <= onset
    assert top["signal"] == "speech_frames"
    last = {(f.cohort, f.kind): f for f in rig.collector.drift_job.last_findings}
    fleet = last[("fleet", "input")]
    assert not fleet.detected and fleet.excluded == (BROKEN,) and fleet.level < 1.0
    for device in DEVICES.keys() - {BROKEN}:
        assert not last[(f"device:{device}", "input")].detected
