"""Every simulator scenario on the CI fleet: flagged within 3 steps of onset (a ramp: called
gradual), never before, with the right pattern, by the right cohorts, with the default budget.

Each scenario's targeted devices are simulated again with the change (``cases``); the others
send the healthy run's windows. The replay evaluates from just before the warm-up ends (earlier
evaluations are the healthy run's own, on the same windows: no alert) to a few steps past the
onset. The evaluation at step k sees steps 0 … k − 1, so one that flags a change at k = onset
+ d has seen d changed steps: d is the detection delay. Measured figures print with ``-s``.
"""
from __future__ import annotations

import pytest

from tests.cloud.drift_e2e import offline
from tests.cloud.drift_e2e.cases import CASES, WITHIN, check_onset

# New voices in a household are a small, sustained shift (spectral centroid +0.13-0.19 ridit,
# 2.5-3.8 x the floor). Within 3 steps it is short of evidence, not of a better combination:
# dev-0002 says one block of 49 utterances in them, its best speech score z 2.3 against its
# baseline, where one look at the budget's rate needs z ~ 5.0 (even sampling noise alone gives
# 0.16 ridit over 49 utterances z ~ 3.9). Judging the 13 scores together (a quadratic form
# against the warm-up's shrunk correlation) lifted dev-0005's detector from 0.63 to 0.67 of h and
# dev-0002's from 0 to 0.22, with a null that rejects too often (docs/drift.md, Known limits).
# Strict: the day it passes, say so.
NEW_SPEAKERS_LATE = pytest.mark.xfail(strict=True, reason="drift engine: new speakers are flagged late or not at all "
                                      "(small sustained shifts: docs/drift.md, Known limits)")
SUDDEN = [pytest.param(k, marks=NEW_SPEAKERS_LATE) if k == "new-speakers" else k
          for k, c in CASES.items() if c.name != "gradual-noise"]


def replay_of(setup, fleet, tmp_path) -> offline.Replay:
    check_onset(setup, fleet.replay.ready, fleet.windows)
    targeted = setup.windows()
    for device in setup.targets:  # before the onset, a targeted device is the healthy run's
        assert offline.same_until(targeted, fleet.windows, device, setup.onset_t), device
    windows = offline.with_scenario(fleet.windows, targeted, set(setup.targets),
                                    offline.EPOCH + setup.end_step * offline.STEP_S)
    replay = offline.Replay(tmp_path / setup.key, fleet.lab, windows, fleet.spec.tag_map(fleet.ids))
    return replay.run(range(offline.WARM_STEPS - 1, setup.end_step + 1))


def check_cohorts(replay: offline.Replay, targets: set[str]) -> None:
    """Only targeted devices alert; a group only by its rule, its largest contributor a targeted device."""
    for (cohort, kind), (k, alert) in replay.opened.items():
        if cohort.startswith("device:"):
            assert cohort.split(":", 1)[1] in targets, (cohort, kind, k, alert.evidence.get("top", [])[:1])
            continue
        ev = alert.evidence
        assert len(targets) >= 2 and ev["rule"] in ("devices", "robust"), (cohort, kind, k, ev.get("rule"))
        assert ev["devices"] and ev["devices"][0]["device"] in targets, (cohort, kind, k, ev["devices"])
        assert {d["device"] for d in ev["devices"] if d["alarm"]} <= targets, (cohort, kind, k, ev["devices"])
        if ev["rule"] == "devices":
            assert len(set(ev["excluded"]) & targets) >= 2, (cohort, kind, k, ev["excluded"])


@pytest.mark.parametrize("key", SUDDEN)
def test_a_sudden_change_is_flagged_within_three_steps_never_before_and_called_sudden(scenarios, healthy_fleet,
                                                                                     tmp_path, key):
    setup = scenarios.setups[key]
    replay = replay_of(setup, healthy_fleet, tmp_path)
    try:
        assert all(k > setup.onset_step for k, _ in replay.opened.values()), \
            {key_: k for key_, (k, _) in replay.opened.items()}
        flagged = {}
        for device in setup.targets:
            mine = sorted((k, a) for (cohort, _), (k, a) in replay.opened.items() if cohort == f"device:{device}")
            flagged[device] = mine[0] if mine else None
        rows = [_row(device, setup, *flagged[device]) if flagged[device] else f"{device} not flagged: "
                f"{_findings(replay, device, setup)}" for device in setup.targets]
        print(f"\n{key} on {setup.targets} (onset step {setup.onset_step}): " + "; ".join(rows))
        for device, first in flagged.items():
            assert first is not None, f"{key}: {device} was not flagged; alerts {sorted(replay.opened)}"
            k, alert = first
            assert 1 <= k - setup.onset_step <= WITHIN and alert.pattern == "sudden", _row(device, setup, k, alert)
            assert alert.onset_t >= setup.onset_t, _row(device, setup, k, alert)
        check_cohorts(replay, set(setup.targets))
        groups = {key_: k - setup.onset_step for key_, (k, _) in replay.opened.items()
                  if not key_[0].startswith("device:")}
        if len(setup.targets) == 1:
            assert not groups  # one device's fault is its own: never the fleet's
        else:
            assert 1 <= min(d for (cohort, _), d in groups.items() if cohort == "fleet") <= WITHIN, groups
        print(f"{key}: groups (delay) {groups}")
    finally:
        replay.close()


def test_a_slow_noise_ramp_is_flagged_as_gradual_and_not_before_it_began(scenarios, healthy_fleet, tmp_path):
    setup = scenarios.setups["gradual-noise"]
    replay = replay_of(setup, healthy_fleet, tmp_path)
    try:
        assert all(k > setup.onset_step for k, _ in replay.opened.values())
        check_cohorts(replay, set(setup.targets))
        rows = []
        for cohort in [f"device:{d}" for d in setup.targets] + ["fleet"]:
            assert (cohort, "input") in replay.opened, f"the ramp was not flagged on {cohort}: {sorted(replay.opened)}"
            k, opened = replay.opened[(cohort, "input")]
            now = next(a for a in replay.alerts.values() if a.id == opened.id)
            gradual_at = _first_gradual(replay, cohort, setup)
            rows.append(f"{cohort} opened after {k - setup.onset_step} step(s) ({opened.pattern}), onset error "
                        f"{offline.step_of(opened.onset_t) - setup.onset_step:+.0f}, called gradual from step "
                        f"{gradual_at and gradual_at - setup.onset_step}, now {now.pattern}")
            assert opened.onset_t >= setup.onset_t and now.pattern == "gradual", rows[-1]
        fleet = next(a for a in replay.alerts.values() if a.key == ("fleet", "input"))
        rows.append("fleet attribution " + ", ".join(f"{d['device']} {d['contribution']:.2f}"
                                                      for d in fleet.evidence["devices"]))
        print(f"\ngradual-noise on {setup.targets} (ramp from step {setup.onset_step} over "
              f"{setup.case.post_steps} steps): " + "; ".join(rows))
    finally:
        replay.close()


def _row(device, setup, k, alert) -> str:
    top = alert.evidence["top"][0]
    return (f"{device} {alert.kind} after {k - setup.onset_step} step(s), onset error "
            f"{offline.step_of(alert.onset_t) - setup.onset_step:+.0f}, {alert.pattern}, top {top['signal']} vs "
            f"{top['against']} z {top['z']} severity {top['severity']}")


def _first_gradual(replay, cohort, setup) -> int | None:
    return next((k for k in range(setup.onset_step, setup.end_step + 1)
                 if (f := replay.finding(k, cohort, "input")) is not None and f.detected and f.pattern == "gradual"),
                None)


def _findings(replay, device, setup) -> list:
    out = []
    for k in range(setup.onset_step, setup.end_step + 1):
        for kind in ("input", "output"):
            f = replay.finding(k, f"device:{device}", kind)
            if f is not None:
                top = f.top[0] if f.top else {}
                out.append((k, kind, f.detected, f.level and round(f.level, 2), top.get("signal"), top.get("z"),
                            top.get("severity")))
    return out
