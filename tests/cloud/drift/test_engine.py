"""The engine on seeded fleets of households the reference never saw: healthy fleets stay quiet;
sudden, gradual, dead-microphone, concept and multi-model cases are found, on time, with their
pattern, by the right cohorts."""
from __future__ import annotations

import numpy as np
import pytest

from cloud.drift.engine import DriftConfig, DriftEngine
from tests.cloud.drift.population import HEALTHY, Drift, FakeSource, households, play

STEP = 60.0
WARM = 36
CFG = DriftConfig(step_s=STEP, concept_step_s=STEP, warmup_s=WARM * STEP, settle_s=0.0)
TAGS = {"d0": {"hall"}, "d1": {"hall"}, "d2": {"hall"}, "d3": {"kitchen"}, "d4": {"kitchen"}, "d5": {"kitchen"},
        "d6": set(), "d7": set()}


def fleet(profile, drift_of=lambda d, s: HEALTHY, steps=90, seed=0, **kw):
    rng = np.random.default_rng(seed)
    homes = households(rng, 8)
    src = FakeSource({"m1": profile}, TAGS)
    play(src, profile, homes, range(steps), STEP, rng, drift_of=drift_of, **kw)
    return src


def evaluate(src, steps, config=CFG):
    """{step: {(cohort, kind): finding}} of the detected findings, evaluating after each step."""
    engine = DriftEngine(src, config)
    out = {}
    for k in steps:
        out[k] = {(f.cohort, f.kind): f for f in engine.findings((k + 1) * STEP) if f.detected}
    return out


def first(found: dict, key) -> int | None:
    return next((k for k, f in sorted(found.items()) if key in f), None)


def test_a_healthy_fleet_of_unseen_households_raises_nothing(profile):
    for seed in (1, 2):
        src = fleet(profile, seed=seed, feedback_share=0.1, audit_share=0.05)
        found = evaluate(src, range(WARM, 90))
        assert not any(found.values()), {k: sorted(v) for k, v in found.items() if v}
    # the engine did judge the devices (baselines, peers) and the fleet (reference)
    engine = DriftEngine(src, CFG)
    findings = engine.findings(90 * STEP)
    dev = next(f for f in findings if f.cohort == "device:d3" and f.kind == "input")
    assert dev.level is not None and dev.tests["cusum_h"] > 3 and "peers" in dev.tests
    fl = next(f for f in findings if f.cohort == "fleet" and f.kind == "output")
    assert fl.tests["level_alpha"] < 1e-5


def test_noise_on_the_hall_is_found_within_three_steps_and_never_before(profile):
    onset = 50
    src = fleet(profile, lambda d, s: Drift(noise_db=10.0) if d in ("d0", "d1", "d2") and s >= onset else HEALTHY)
    found = evaluate(src, range(WARM, 70))
    for device in ("d0", "d1", "d2"):
        k = first(found, (f"device:{device}", "input"))
        assert onset <= k <= onset + 2
        f = found[k][(f"device:{device}", "input")]
        assert f.pattern == "sudden" and f.onset_t >= onset * STEP and f.horizon == "change"
    k = first(found, ("tag:hall", "input"))
    assert k is not None and k <= onset + 2
    fleet_k = first(found, ("fleet", "input"))
    f = found[fleet_k][("fleet", "input")]
    assert f.rule == "devices" and f.onset_t >= onset * STEP
    assert {d["device"] for d in f.devices if d["driving"]} <= {"d0", "d1", "d2"}
    assert not any(key[0] in ("device:d3", "device:d4", "device:d5", "tag:kitchen")
                   for v in found.values() for key in v)


def test_a_fleet_wide_level_drop_raises_the_fleet_itself(profile):
    src = fleet(profile, lambda d, s: Drift(gain_db=-15.0) if s >= 50 else HEALTHY, steps=60)
    found = evaluate(src, range(50, 60))
    k = first(found, ("fleet", "input"))
    assert k is not None and k <= 52
    f = found[k][("fleet", "input")]
    assert f.rule in ("robust", "devices") and f.top[0]["signal"] in ("level_dbfs", "feature:logmel_mean",
                                                                      "feature:logmel_band0_mean",
                                                                      "feature:logmel_band1_mean",
                                                                      "feature:logmel_band2_mean")
    assert f.severity >= 1 and f.pattern == "sudden"


def run_alerts(src, steps, config=CFG) -> dict:
    """Evaluate after each step through the alert state machine; {id: alert} as it ends."""
    engine, alerts = DriftEngine(src, config), {}
    for k in steps:
        for change in engine.evaluate((k + 1) * STEP, [a for a in alerts.values() if a.status != "resolved"]):
            alerts[change.alert.id] = change.alert
    return alerts


def test_a_slow_noise_ramp_is_gradual(profile):
    def drift_of(d, s):
        return Drift(noise_db=float(np.clip((s - 40) * 0.5, 0.0, 20.0)))

    alerts = run_alerts(fleet(profile, drift_of, steps=70), range(WARM, 70))
    fleet_alert = next(a for a in alerts.values() if a.cohort == "fleet" and a.kind == "input")
    assert fleet_alert.onset_t >= 40 * STEP and fleet_alert.pattern == "gradual"


def test_a_microphone_that_dies_raises_its_device_alone(profile):
    src = fleet(profile, lambda d, s: Drift(dead=True) if d == "d4" and s >= 45 else HEALTHY, steps=60)
    found = evaluate(src, range(WARM, 60))
    k = first(found, ("device:d4", "input"))
    assert k is not None and 45 <= k <= 47
    assert found[k][("device:d4", "input")].top[0]["signal"] == "noise_dbfs"
    assert not any(key[0] in ("fleet", "tag:kitchen") for v in found.values() for key in v)


def test_a_microphone_dead_from_install_is_found_by_its_peers(profile):
    src = fleet(profile, lambda d, s: Drift(dead=True) if d == "d6" else HEALTHY, steps=12)
    found = evaluate(src, range(5, 12))
    k = first(found, ("device:d6", "input"))
    assert k is not None
    f = found[k][("device:d6", "input")]
    assert f.horizon == "peers" and f.top[0]["against"] == "peers"
    assert not any(key[0] == "fleet" for v in found.values() for key in v)


def test_a_constant_shift_through_busy_and_quiet_hours_is_one_sudden_episode(profile):
    """Traffic moves z, not the effect: one alert, opened once, sudden, its severity steady."""
    def traffic(step):
        return 3.0 if (step // 5) % 2 == 0 else 0.3

    src = fleet(profile, lambda d, s: Drift(noise_db=8.0) if d in ("d0", "d1") and s >= 40 else HEALTHY,
                steps=80, traffic=traffic)
    engine, alerts, severities = DriftEngine(src, CFG), {}, []
    for k in range(WARM, 80):
        for change in engine.evaluate((k + 1) * STEP, [a for a in alerts.values() if a.status != "resolved"]):
            alerts[change.alert.id] = change.alert
            if change.alert.cohort == "device:d0" and change.alert.kind == "input":
                severities.append(change.alert.severity)
    mine = [a for a in alerts.values() if a.cohort == "device:d0" and a.kind == "input"]
    assert len(mine) == 1 and mine[0].status == "open"
    assert mine[0].onset_t >= 40 * STEP and mine[0].opened_t <= 43 * STEP and mine[0].pattern == "sudden"
    assert len(severities) > 30 and np.std(severities) / np.mean(severities) < 0.3
    assert not any(a.cohort in ("device:d2", "device:d3", "tag:kitchen") for a in alerts.values())


def test_the_model_getting_worse_is_concept_drift_against_the_shipped_reference(profile):
    src = fleet(profile, lambda d, s: Drift(accuracy_drop=0.35) if s >= 50 else HEALTHY, steps=60,
                feedback_share=0.1, audit_share=0.1)
    found = evaluate(src, range(50, 60))
    k = first(found, ("fleet", "concept"))
    assert k is not None
    top = {t["signal"] for t in found[k][("fleet", "concept")].top}
    assert top & {"estimated_accuracy", "audit_accuracy", "feedback_accuracy"}


def test_a_model_bad_from_launch_is_found_without_any_baseline(profile):
    src = fleet(profile, lambda d, s: Drift(accuracy_drop=0.35), steps=12, audit_share=0.15)
    found = evaluate(src, range(5, 12))
    k = first(found, ("fleet", "concept"))
    assert k is not None and found[k][("fleet", "concept")].horizon == "level"


def test_two_models_are_judged_each_against_its_own_reference(profile):
    src = fleet(profile, model_of=lambda d: "m2" if d in ("d6", "d7") else "m1", steps=60)
    src.profiles["m2"] = profile
    found = evaluate(src, range(WARM, 60))
    assert not any(found.values())
    cohorts = {f.cohort for f in DriftEngine(src, CFG).findings(60 * STEP)}
    assert {"model:m1", "model:m2", "fleet", "tag:hall", "tag:kitchen"} <= cohorts


@pytest.mark.parametrize("missing", ["chunks", "calibration"])
def test_older_profiles_still_work_with_priors(profile, missing):
    old = {k: v for k, v in profile.items() if k != missing}
    src = fleet(old, steps=40)
    assert not any(evaluate(src, range(WARM, 40)).values())


def test_a_quiet_device_still_extending_its_warm_up_keeps_the_noise_floor_it_learned(profile):
    """d0 says nothing, so it keeps extending its warm-up (re-learning every quarter of one); its
    microphone dies after the warm-up. The noise floor the warm-up learned stands, so the dead
    microphone stays an alarm instead of being learned into the baseline at the next retry (with
    4 devices there are no peers to catch it either)."""
    rng = np.random.default_rng(5)
    homes = households(rng, 4)
    homes[0].per_step = 0.0
    src = FakeSource({"m1": profile})
    onset, steps = WARM + 2, 3 * WARM
    play(src, profile, homes, range(steps), STEP, rng,
         drift_of=lambda d, s: Drift(dead=True) if d == "d0" and s >= onset else HEALTHY)
    found = evaluate(src, range(WARM, steps))
    flagged = [k for k in range(onset, steps) if ("device:d0", "input") in found[k]]
    assert flagged and flagged[0] <= onset + 2 and flagged == list(range(flagged[0], steps)), flagged
    assert not any(key[0] == "fleet" for v in found.values() for key in v)

