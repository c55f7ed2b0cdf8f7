"""A scenario end to end on real parts: test-split households heard by real agents, windows over a
private mosquitto to a real collector with drift on; the alerts come back on MQTT and the webhook.

Four devices; from step ``ONSET`` (after their warm-up) two of them hear white noise 5 dB below
the speech level (the simulator's sudden-noise, ``affected`` 0.5). Each noisy device raises its
own alert within three steps, the fleet raises one because two of its four devices alarm (its
"devices" rule), and the quiet devices raise nothing.
"""
from __future__ import annotations

from edge.sim.scenarios import ScenarioParams
from tests.cloud.drift_e2e.rig import WARMUP_STEPS, WINDOW_S
from tests.cloud.drift_e2e.rooms import rooms, world

IDS = ["dev-a", "dev-b", "dev-c", "dev-d"]
ONSET = WARMUP_STEPS + 2
WITHIN = 3


def test_noise_on_two_of_four_devices_is_flagged_on_them_and_the_fleet_through_mqtt(households_lab, rig, tmp_path):
    scenario = ScenarioParams(name="sudden-noise", onset_s=ONSET * WINDOW_S, snr_db=5.0, affected=0.5)
    w = world(households_lab, len(IDS), scenario)
    noisy = {IDS[i] for i in w.targets}
    assert len(noisy) == 2
    n = ONSET + WITHIN + 1
    rig.play(rooms(w, IDS, n * WINDOW_S), tmp_path / "agents")

    seen = rig.sweep(range(1, n + 1))
    expected = {(f"device:{d}", "input") for d in noisy} | {("fleet", "input")}
    assert set(seen) == expected, f"alerts {sorted(seen)}; noisy devices {sorted(noisy)}"
    rows = []
    for (cohort, kind), (k, alert) in sorted(seen.items()):
        onset_error = (alert.onset_t - rig.t0) / WINDOW_S - ONSET
        top = alert.evidence["top"][0]
        rows.append(f"{cohort} after {k - ONSET} step(s), onset error {onset_error:+.0f}, {alert.pattern}, "
                    f"top {top['signal']} vs {top['against']} z {top['z']}")
        assert 1 <= k - ONSET <= WITHIN and alert.pattern == "sudden" and onset_error >= 0, rows[-1]
    fleet = seen[("fleet", "input")][1]
    assert fleet.evidence["rule"] == "devices" and set(fleet.evidence["excluded"]) == noisy
    assert {d["device"] for d in fleet.evidence["devices"][:2]} == noisy  # the noisy devices drive it

    ids = {alert.id for _, alert in seen.values()}
    rig.watcher.wait_for(lambda msgs: ids <= {m["id"] for m in rig.mqtt_alerts()}, what="every alert on MQTT")
    rig.webhook.wait_for(lambda bodies: ids <= {b["id"] for b in bodies})
    print(f"\nsudden noise through MQTT on {sorted(noisy)}: " + "; ".join(rows) + f"; timings {rig.timings}")
