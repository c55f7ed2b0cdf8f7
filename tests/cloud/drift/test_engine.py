"""The engine on seeded fleets: dead microphone, tag-local and fleet-wide shifts, concept drift,
several models, and alerts carried across evaluations."""
from __future__ import annotations

import numpy as np
import pytest

from cloud.drift.engine import DriftConfig, DriftEngine
from tests.cloud.drift.population import LABELS, FakeSource, Population, make_profile, window

STEP = 60.0
CFG = DriftConfig(step_s=STEP, concept_step_s=STEP)
TAGS = {"d0": {"hall", "site-a"}, "d1": {"hall", "site-a"}, "d2": {"hall", "site-a"},
        "d3": {"kitchen", "site-a"}, "d4": {"kitchen", "site-a"}, "d5": {"kitchen", "site-a"}}
HEALTHY = Population()


def fleet(profiles: dict, plan, *, steps: int = 30, n: int = 200, seed: int = 0, tags=None,
          model_of=lambda device: "m1") -> FakeSource:
    """A source holding one 60 s window per device and step; ``plan(device, step)`` → Population."""
    rng = np.random.default_rng(seed)
    tags = TAGS if tags is None else tags
    src = FakeSource(profiles, tags)
    for step in range(steps):
        for device in sorted(tags):
            model = model_of(device)
            src.add(window(profiles[model], plan(device, step).sample(rng, n), device=device, seq=step,
                           t_start=step * STEP + 1.0, model=model, rng=rng))
    return src


def detected(findings) -> dict:
    return {(f.cohort, f.kind): f for f in findings if f.detected}


def by_key(findings) -> dict:
    return {(f.cohort, f.kind): f for f in findings}


@pytest.fixture(scope="module")
def engine_for(calibrator):
    return lambda src, cfg=CFG: DriftEngine(src, cfg, calibrator=calibrator)


def test_a_dead_microphone_raises_its_device_alert_and_not_the_fleets(profile, engine_for):
    # d3's microphone dies at step 20: level and SNR in the lowest bins, features stuck.
    src = fleet({"m1": profile}, lambda d, s: HEALTHY.shifted(dead=True) if d == "d3" and s >= 20 else HEALTHY)
    findings = engine_for(src).findings(30 * STEP)
    alarms = detected(findings)
    assert {cohort for cohort, _ in alarms} == {"device:d3"}
    assert {"input", "output"} <= {kind for _, kind in alarms}
    dev = alarms[("device:d3", "input")]
    assert dev.pattern == "sudden" and dev.onset_t == 20 * STEP
    assert {t["signal"] for t in dev.top[:3]} & {"level_dbfs", "snr_db"}
    # the fleet, its tags and the kitchen all scored without d3, which alarms on its own
    fleet_input = by_key(findings)[("fleet", "input")]
    assert not fleet_input.detected and fleet_input.excluded == ("d3",) and fleet_input.level < 1


def test_a_shift_on_the_hall_devices_raises_a_fleet_alert_naming_them(profile, engine_for):
    hall = {"d0", "d1", "d2"}
    src = fleet({"m1": profile}, lambda d, s: HEALTHY.shifted(noise_db=6.0) if d in hall and s >= 20 else HEALTHY)
    engine = engine_for(src)
    changes = engine.evaluate(30 * STEP, [])
    opened = {(c.alert.cohort, c.alert.kind): c.alert for c in changes if c.change == "opened"}
    assert ("fleet", "input") in opened and ("tag:hall", "input") in opened
    assert ("tag:kitchen", "input") not in opened
    assert {("device:" + d, "input") for d in hall} <= set(opened)
    alert = opened[("fleet", "input")]
    ev = alert.evidence
    assert ev["rule"] == "devices" and set(ev["excluded"]) == hall
    assert {d["device"] for d in ev["devices"] if d["driving"]} == hall
    assert [t["tag"] for t in ev["tags"] if t["driving"]] == ["hall"]
    assert ev["top"][0]["signal"] == "snr_db" and ev["n"] > 0 and ev["horizon"] == "devices"
    assert alert.pattern == "sudden" and alert.onset_t == 20 * STEP  # as its devices' episodes
    # the hall's own merged score fails plainly; the fleet's, diluted by the kitchen, need not
    hall_top = opened[("tag:hall", "input")].evidence["top"][0]
    assert hall_top["signal"] == "snr_db" and hall_top["score"] >= hall_top["threshold"]
    assert opened[("tag:hall", "input")].pattern == "sudden"


def test_a_fleet_wide_shift_names_every_device_and_no_single_tag(profile, engine_for):
    src = fleet({"m1": profile}, lambda d, s: HEALTHY.shifted(noise_db=6.0) if s >= 20 else HEALTHY, seed=1)
    f = by_key(engine_for(src).findings(30 * STEP))[("fleet", "input")]
    assert f.detected and f.pattern == "sudden" and f.onset_t == 20 * STEP
    driving = {d["device"] for d in f.devices if d["driving"]}
    assert len(driving) >= 5  # each carries about a sixth: the 80 % cover needs five or six
    assert all(0.1 < d["contribution"] < 0.25 for d in f.devices)
    assert not any(t["driving"] for t in f.tags)
    assert {t["tag"] for t in f.tags} == {"hall", "kitchen", "site-a"}


def test_the_robust_fleet_check_sees_a_shift_no_single_device_can(profile, engine_for):
    # 12 quiet devices (15 utterances a step): +4 dB noise is too little evidence per device,
    # plain for the fleet's 180 utterances a step.
    tags = {f"q{i:02d}": {"quiet"} for i in range(12)}
    src = fleet({"m1": profile}, lambda d, s: HEALTHY.shifted(noise_db=4.0) if s >= 20 else HEALTHY,
                n=15, tags=tags, seed=2)
    findings = engine_for(src).findings(30 * STEP)
    alarms = detected(findings)
    assert ("fleet", "input") in alarms and alarms[("fleet", "input")].rule == "robust"
    assert not any(c.startswith("device:") for c, k in alarms if k == "input")


@pytest.mark.parametrize("with_accuracy", [True, False])
def test_a_feedback_accuracy_drop_on_one_class_is_concept_drift_on_that_class(with_accuracy, engine_for):
    # From step 15 the model gets "yes" right half the time (0.95 before); other words unchanged.
    # With the lab's accuracy in the profile it is compared with that; without, with the first
    # half of the look-back.
    profile = make_profile(np.random.default_rng(7), with_accuracy=with_accuracy)
    acc = list(HEALTHY.accuracy)
    acc[LABELS.index("yes")] = 0.5
    worse = HEALTHY.shifted(accuracy=tuple(acc))
    src = fleet({"m1": profile}, lambda d, s: worse if s >= 15 else HEALTHY, seed=3)
    findings = engine_for(src).findings(30 * STEP)
    f = by_key(findings)[("fleet", "concept")]
    assert f.detected and f.top[0]["signal"] == "class:yes"
    assert f.top[0]["score"] > 0.3  # the accuracy drop
    assert all(t["signal"] in ("class:yes", "accuracy") for t in f.top if t["severity"] >= 1)
    assert not by_key(findings)[("fleet", "input")].detected


def test_models_are_scored_against_their_own_profiles(profile, engine_for):
    other = make_profile(np.random.default_rng(8), population=Population(gain_db=-6.0))
    on_m2 = {"d3", "d4", "d5"}
    src = fleet({"m1": profile, "m2": other},
                lambda d, s: (HEALTHY.shifted(gain_db=-6.0, noise_db=6.0 if s >= 20 else 0.0) if d in on_m2
                              else HEALTHY),
                model_of=lambda d: "m2" if d in on_m2 else "m1", seed=4)
    src.add(window(profile, HEALTHY.sample(np.random.default_rng(0), 50), device="d9", seq=0, t_start=1500.0,
                   model="unknown-model"))
    engine = engine_for(src)
    findings = by_key(engine.findings(30 * STEP))
    # m2's devices are 6 dB quieter than m1's reference, but that is m2's own reference: only
    # the noise from step 20 is drift.
    assert findings[("model:m2", "input")].detected and not findings[("model:m1", "input")].detected
    assert findings[("model:m2", "input")].top[0]["model"] == "m2"
    fleet_input = findings[("fleet", "input")]
    assert {m["model"] for m in fleet_input.models} == {"m1", "m2"}
    assert engine.snapshot(30 * STEP, "input").skipped == {"no_profile": 1}


def test_alerts_across_evaluations_open_within_three_windows_and_resolve_once(profile, engine_for):
    # Two devices; +6 dB noise on both during steps 20-29. Evaluated every step with the alerts
    # carried over: the fleet alert opens once the look-back holds steps 20 and 21, stays open
    # (updated) through the episode, and resolves 3 healthy evaluations after the noise stops.
    tags = {"a": {"x"}, "b": {"x"}}
    src = fleet({"m1": profile}, lambda d, s: HEALTHY.shifted(noise_db=6.0) if 20 <= s < 30 else HEALTHY,
                steps=40, n=150, tags=tags, seed=5)
    engine = engine_for(src, DriftConfig(step_s=STEP, concept_step_s=STEP, long_steps=12))
    open_alerts, log = {}, []
    for k in range(18, 40):
        now = (k + 1) * STEP  # the look-back now ends with step k
        for c in engine.evaluate(now, list(open_alerts.values())):
            if c.alert.cohort == "fleet" and c.alert.kind == "input":
                log.append((k, c.change, c.alert.pattern, c.alert.onset_t))
            if c.change == "resolved":
                open_alerts.pop(c.alert.key)
            else:
                open_alerts[c.alert.key] = c.alert
    opened = [entry for entry in log if entry[1] == "opened"]
    resolved = [entry for entry in log if entry[1] == "resolved"]
    assert len(opened) == 1 and len(resolved) == 1
    k_open, _, pattern, onset = opened[0]
    assert 20 <= k_open <= 22 and pattern == "sudden" and onset == 20 * STEP
    assert 32 <= resolved[0][0] <= 36
