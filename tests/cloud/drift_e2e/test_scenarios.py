"""Drift acceptance: healthy, sudden and gradual changes of real speech heard by real agents.

Each test plays rooms (``rooms.Room``) to real agents, which publish their windows over a
private mosquitto to a real collector; the collector's drift job is then stepped through the
windows (``Rig.tick``). A change begins at the start of window ``ONSET`` (audio time); the
evaluation at step k sees windows 0 … k − 1, so it has seen ``k − ONSET`` changed windows. The
measured delays are printed (``pytest -s``) for the report.
"""
from __future__ import annotations

import numpy as np
import pytest

from edge.sim.scenarios import Identity, ScenarioParams, build_transform
from tests.cloud.drift_e2e.rig import LONG_STEPS, WINDOW_S, Rig
from tests.cloud.drift_e2e.rooms import Room

ONSET = 6  # the first changed window
WITHIN = 3  # sudden changes are flagged within this many changed windows


def test_healthy_streams_raise_no_alert_over_the_long_horizon(world, rig, tmp_path):
    n = LONG_STEPS + 3
    rooms = {d: Room(world.pool, world.reference_voices, Identity(), n * WINDOW_S, seed=s)
             for d, s in (("dev-a", 101), ("dev-b", 202))}
    rig.play(rooms, tmp_path / "agents")
    utterances = [w["software"]["utterances"] for w in rig.windows() if w["duration_s"] == WINDOW_S]
    assert len(utterances) == 2 * n and min(utterances) >= 30  # every step is scored on its own
    for k in range(1, n + 1):
        assert rig.tick(k) == [], f"a healthy stream raised an alert at step {k}"
    last = {(f.cohort, f.kind): f for f in rig.collector.drift_job.last_findings}
    for cohort in ("fleet", "device:dev-a", "device:dev-b"):
        for kind in ("input", "output"):
            f = last[(cohort, kind)]
            assert not f.detected and f.level < 1.0 and f.n >= 3 * 30
    print(f"\nhealthy: {2 * n} windows, max level "
          f"{max(f.level for f in last.values() if f.level is not None):.2f}, timings {rig.timings}")


SUDDEN = {
    "noise": dict(name="sudden-noise", snr_db=10.0),  # white noise 10 dB below the speech level
    "level-drop": dict(name="level-drop", gain_db=-20.0),
    "band-limit": dict(name="band-limit"),  # a 300-3400 Hz telephone channel
}


@pytest.mark.parametrize("change", [*SUDDEN, "new-speakers"])
def test_sudden_changes_are_flagged_within_three_windows_and_called_sudden(world, rig, tmp_path, change):
    n = ONSET + WITHIN
    if change == "new-speakers":  # the other voices of the dataset, 1.6 times higher (children, say)
        room = Room(world.pool, world.reference_voices, Identity(), n * WINDOW_S, seed=303,
                    new_voices=world.other_voices, switch_s=ONSET * WINDOW_S, shift=1.6)
    else:
        room = Room(world.pool, world.reference_voices, world.channel(onset_window=ONSET, **SUDDEN[change]),
                    n * WINDOW_S, seed=303)
    rig.play({"dev-a": room}, tmp_path / "agents")
    seen = rig.sweep(range(1, n + 1))
    assert ("device:dev-a", "input") in seen, f"{change} was not flagged; alerts {sorted(seen)}"
    step, alert = seen[("device:dev-a", "input")]
    delay = step - ONSET
    onset_step = (alert.onset_t - world.t0) / WINDOW_S
    print(f"\n{change}: flagged after {delay} changed window(s), pattern {alert.pattern}, onset step "
          f"{onset_step:.0f} (true {ONSET}), top {alert.evidence['top'][0]['signal']}, timings {rig.timings}")
    assert 1 <= delay <= WITHIN
    assert alert.pattern == "sudden"
    assert ONSET - 1 <= onset_step <= ONSET
    assert all(k > ONSET for k, _ in seen.values())  # nothing before the change


def test_a_gradual_change_is_flagged_and_called_gradual(world, rig, tmp_path):
    onset, ramp = 3, 12  # babble noise from 40 dB below the speech level down to 0 dB over 12 windows
    n = onset + ramp
    room = Room(world.pool, world.reference_voices,
                world.channel("gradual-noise", onset, noise="babble", start_snr_db=40.0, snr_db=0.0,
                              ramp_s=ramp * WINDOW_S), n * WINDOW_S, seed=404)
    rig.play({"dev-a": room}, tmp_path / "agents")
    seen = rig.sweep(range(1, n + 1))
    assert ("device:dev-a", "input") in seen, f"the ramp was not flagged; alerts {sorted(seen)}"
    step, alert = seen[("device:dev-a", "input")]
    onset_step = (alert.onset_t - world.t0) / WINDOW_S
    print(f"\ngradual: flagged after {step - onset} ramped window(s), pattern {alert.pattern}, onset step "
          f"{onset_step:.0f} (true {onset}), top {alert.evidence['top'][0]['signal']}, timings {rig.timings}")
    assert alert.pattern == "gradual"
    assert step > onset and onset - 1 <= onset_step < step


def test_a_step_on_a_quiet_device_is_flagged_soon_and_called_sudden(world, mosquitto, tmp_path):
    # 30 s windows hold ~18 utterances, fewer than a check needs: the detector reads merged steps.
    # (It was flagged 20 steps late, "gradual", its onset at the start of the look-back.)
    window_s, onset, n = 30.0, 20, 30
    rig = Rig(broker_url=mosquitto.url, broker_port=mosquitto.port, root=tmp_path / "rig", bundle=world.bundle,
              public_key=world.public_key, release_key=world.release_key, t0=world.t0, window_s=window_s,
              long_steps=30)
    try:
        p = ScenarioParams(name="level-drop", onset_s=onset * window_s, gain_db=-12.0).check()
        drop = build_transform(p, True, ref_level_dbfs=world.ref_level_dbfs, rng=np.random.default_rng(7))
        rig.play({"dev-a": Room(world.pool, world.reference_voices, drop, n * window_s, seed=707)},
                 tmp_path / "agents")
        assert max(w["software"]["utterances"] for w in rig.windows()) < 30
        seen = rig.sweep(range(1, n + 1))
        assert ("device:dev-a", "input") in seen, f"the quiet step was not flagged; alerts {sorted(seen)}"
        step, alert = seen[("device:dev-a", "input")]
        onset_step = (alert.onset_t - world.t0) / window_s
        print(f"\nquiet 12 dB step: flagged after {step - onset} changed window(s), pattern {alert.pattern}, "
              f"onset step {onset_step:.0f} (true {onset}), timings {rig.timings}")
        assert step - onset <= 6 and alert.pattern == "sudden" and onset - 1 <= onset_step <= onset
    finally:
        rig.close()
