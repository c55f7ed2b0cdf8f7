"""A healthy fleet of households the reference never heard raises no alert (CI size).

Six devices, each a household of 1-3 test-split voices, 8 simulated hours from 17:00 of diurnal
traffic in talking sessions (the busy evening, then the quiet night), the lab's real bundle and
the agent's real pipeline (``edge.sim.offline``); the windows go into a real SQLite store and
the collector's drift job evaluates after every 5-minute step with the default false-alarm
budget (``offline.CONFIG``: only the warm-up is shortened, to 3 h). The full-size run (20
devices, 24 h) is ``scripts/bench_drift.py``'s.
"""
from __future__ import annotations

from edge.sim.households import split_speaker_names
from shared.bundle import load_bundle
from tests.cloud.drift_e2e import offline

SPEECH = {"utterance_ms", "level_dbfs", "snr_db"}


def test_a_healthy_fleet_of_unseen_households_raises_no_alert(healthy_fleet):
    fleet, replay = healthy_fleet, healthy_fleet.replay
    names = split_speaker_names(load_bundle(fleet.lab.bundle_path, None, require_signature=False).manifest)
    households = [tuple(row["speakers"]["household"]) for row in fleet.summary["per_device"]]
    assert all(1 <= len(h) <= 3 and set(h) <= set(names["test"]) for h in households)
    assert len(set(households)) >= 4, households  # households differ: the test split has 7 voices
    hourly = _utterances_per_hour(fleet.windows)
    assert max(hourly) >= 5 * max(1, min(hourly)), hourly  # busy evening, quiet night

    assert replay.alerts == {}, {a.key: (offline.step_of(a.opened_t), a.evidence.get("top", [])[:1])
                                 for a in replay.alerts.values()}

    # it cannot pass by seeing nothing: every device was judged against its own baseline, its
    # speech included, and against its peers; the fleet against the baselines and the reference
    last = fleet.steps
    assert set(replay.ready) == set(fleet.ids), replay.ready
    judged = 0
    for k in range(offline.WARM_STEPS + 1, last + 1):
        for device in fleet.ids:
            f = replay.finding(k, f"device:{device}", "input")
            assert f is not None and f.level is not None and "peers" in f.tests
            judged += any(row["signal"] in SPEECH and row["against"] == "baseline" for row in f.top)
    assert judged >= 100, judged
    final = replay.finding(last, "fleet", "input")
    assert final.level is not None and final.tests["level_alpha"] < 1e-5 and final.tests["cusum_h"] > 3
    early = replay.finding(offline.WARM_STEPS - 1, "fleet", "input")
    assert early.level is not None and any(row["against"] == "reference" for row in early.top)

    monitored = [k for k in replay.findings if k > offline.WARM_STEPS]
    device_days = sum(last - replay.ready[d] for d in fleet.ids) * offline.STEP_S / offline.DAY_S
    print(f"\nhealthy fleet: {len(fleet.ids)} devices x {fleet.spec.hours:g} h, {fleet.summary['utterances']} "
          f"utterances, {device_days:.2f} device-days judged against full baselines "
          f"(baselines ready at steps {sorted(replay.ready.values())}), {judged} device-steps with speech judged; "
          f"max level (S/h or log p/log alpha) devices {_r(replay.max_level(monitored, 'device:'))}, "
          f"fleet {_r(replay.max_level(monitored, 'fleet'))}, tags {_r(replay.max_level(monitored, 'tag:'))}, "
          f"whole run {_r(replay.max_level())}; timings {fleet.timings}")


def _utterances_per_hour(windows: list[dict]) -> list[int]:
    hours: dict[int, int] = {}
    for w in windows:
        h = int((w["t_start"] - offline.EPOCH) // 3600)
        hours[h] = hours.get(h, 0) + w["software"]["utterances"]
    return [hours.get(h, 0) for h in range(max(hours) + 1)]


def _r(levels: dict) -> dict:
    return {k: round(v, 2) for k, v in levels.items()}
