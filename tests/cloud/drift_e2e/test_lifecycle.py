"""An alert's life on real parts: opened, announced on MQTT and the webhook, kept across collector
restarts, acknowledged with ``harken drift ack``, resolved with hysteresis once healthy again."""
from __future__ import annotations

from click.testing import CliRunner

from edge.sim.scenarios import Gain
from shared.audio import SAMPLE_RATE
from shared.cli import root
from tests.cloud.drift_e2e.rig import WARMUP_STEPS, WINDOW_S
from tests.cloud.drift_e2e.rooms import Until, rooms, world

KEY = ("device:dev-a", "input")
RESOLVE_AFTER = 3  # AlertPolicy.resolve_after: healthy evaluations in a row


def test_an_alert_opens_notifies_persists_is_acknowledged_and_resolves(households_lab, rig, tmp_path):
    # a test-split household; after its warm-up the microphone loses 20 dB for three windows
    onset, end, n = WARMUP_STEPS + 2, WARMUP_STEPS + 5, WARMUP_STEPS + 14
    episode = Until(Gain(int(onset * WINDOW_S * SAMPLE_RATE), -20.0), int(end * WINDOW_S * SAMPLE_RATE))
    rig.play(rooms(world(households_lab, 1), ["dev-a"], n * WINDOW_S, lambda i, channel: episode),
             tmp_path / "agents")

    k = 0
    while KEY not in {a.key for a in rig.alerts()}:
        k += 1
        assert k <= end, "the level drop was not flagged while it lasted"
        assert rig.tick(k) == [] or k > onset, f"an alert before the onset: {rig.alerts()}"
    opened = next(a for a in rig.alerts() if a.key == KEY)
    assert opened.status == "open" and opened.pattern == "sudden" and onset < k <= onset + 3
    assert opened.evidence["top"][0]["against"] == "baseline"  # judged against what it learned in its warm-up

    # announced: on MQTT {prefix}/alert/{id} and POSTed to the webhook, with the same content
    rig.watcher.wait_for(lambda msgs: any(t.endswith(f"/alert/{opened.id}") for t, _, _ in msgs),
                         what=f"alert {opened.id} on MQTT")
    on_mqtt = next(m for m in rig.mqtt_alerts() if m["id"] == opened.id)
    assert on_mqtt["status"] == "open" and on_mqtt["cohort"] == "device:dev-a" and on_mqtt["signal"] == "input"
    hooked = rig.webhook.wait_for(lambda bodies: any(b["id"] == opened.id for b in bodies))
    assert next(b for b in hooked if b["id"] == opened.id)["evidence"]["top"] == on_mqtt["evidence"]["top"]

    # a restarted collector keeps the alert: the next evaluation updates it, opens nothing new
    rig.restart_collector()
    k += 1
    rig.tick(k)
    mine = [a for a in rig.alerts() if a.key == KEY]
    assert [a.id for a in mine] == [opened.id] and mine[0].status == "open" and mine[0].updated_t > opened.updated_t

    # acknowledged by a person through the CLI; it stays acknowledged while the drift lasts
    result = CliRunner().invoke(root, ["drift", "ack", opened.id, "--db", rig.db_url, "--by", "oncall"])
    assert result.exit_code == 0, result.output
    assert rig.store.alert(opened.id)["status"] == "acked"

    # healthy again from window `end`: healthy evaluations once the short horizon clears, then hysteresis
    streaks = {}
    while k < n:
        k += 1
        if k == end + 3:
            rig.restart_collector()  # the healthy streak is kept in the store, too
        alert = next(a for a in rig.alerts() if a.id == opened.id)
        if alert.status == "resolved":
            break
        rig.tick(k)
        alert = next(a for a in rig.alerts() if a.id == opened.id)
        streaks[k] = (alert.status, alert.healthy_streak)
    resolved = next(a for a in rig.alerts() if a.id == opened.id)
    assert resolved.status == "resolved", f"not resolved by step {n}: {streaks}"
    resolved_at = max(streaks)
    assert streaks[resolved_at] == ("resolved", RESOLVE_AFTER)
    assert [streaks[s] for s in range(resolved_at - RESOLVE_AFTER + 1, resolved_at)] == \
        [("acked", i) for i in range(1, RESOLVE_AFTER)]
    assert resolved_at - RESOLVE_AFTER + 1 > end  # no healthy evaluation before a healthy window arrived
    assert resolved.acked_by == "oncall" and resolved.acked_t is not None
    assert [a.id for a in rig.alerts() if a.key == KEY] == [opened.id]

    rig.watcher.wait_for(lambda msgs: any(m["id"] == opened.id and m["status"] == "resolved"
                                          for m in rig.mqtt_alerts()), what="the resolution on MQTT")
    rig.webhook.wait_for(lambda bodies: any(b["id"] == opened.id and b["status"] == "resolved" for b in bodies))
    print(f"\nlifecycle: opened at step {opened.opened_t and (opened.opened_t - rig.t0) / WINDOW_S:.0f} "
          f"(onset {onset}), healthy from window {end}, resolved at step {resolved_at}; streaks {streaks}")
