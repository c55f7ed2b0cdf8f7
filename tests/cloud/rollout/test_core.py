"""The pure decision core, driven by a fake fleet on a fake clock."""
from __future__ import annotations

import json

from cloud.rollout.core import Command, Observations, decide
from cloud.rollout.gates import Gates
from cloud.rollout.plan import Stage
from cloud.rollout.state import Policy, Rollout

from tests.cloud.rollout.fakes import NEW, OLD, FakeFleet, make_rollout, run, sample


def healthy(r, now):
    return sample(4000)  # enough for every gate's confidence sequence to sit inside its margin


def events(log, name):
    return [e for e in log if e.event == name]


def test_healthy_canary_promotes_through_every_step_and_completes():
    r = make_rollout()
    fleet = FakeFleet(r.devices)
    r, log, decisions = run(r, fleet, until=400, treatment=healthy, control=healthy)
    assert r.status == "completed"
    started = events(log, "stage_started")
    assert [len(e.figures["devices"]) for e in started] == [1, 5, 20]  # ceil(5 %, 25 %, 100 % of 20)
    # monotone: the 5 % device stays in the 25 % step, which stays in 100 %
    assert set(started[0].figures["devices"]) <= set(started[1].figures["devices"])
    # each stage baked its 60 s before promotion
    promoted_t = [e.t for e in events(log, "promoted")] + [events(log, "completed")[0].t]
    assert all(b - a >= 60 for a, b in zip([s.t for s in started], promoted_t))
    assert all(t.active == NEW for t in fleet.running.values())
    assert decisions[0].actions[0].kind == "publish_bundle" and decisions[0].actions[0].model == NEW
    assert fleet.sends == 20  # each device was sent its desired state exactly once


def test_too_few_samples_holds_the_stage_and_says_why():
    r = make_rollout()
    fleet = FakeFleet(r.devices)
    r, log, _ = run(r, fleet, until=600, treatment=lambda r, t: sample(50), control=healthy)
    assert r.status == "running" and r.stage == 0
    assert r.verdicts[0]["verdict"] == "wait"
    assert any("candidate has 50 inferences, needs 200" in e.reason for e in events(log, "verdict"))


def test_error_rate_gate_rolls_back_naming_the_gate_and_the_figures():
    r = make_rollout()
    fleet = FakeFleet(r.devices)
    bad = lambda r, t: sample(4000, errors=400)  # noqa: E731
    r, log, _ = run(r, fleet, until=200, treatment=bad, control=healthy)
    assert r.status == "rolled_back" and r.settled
    rb = events(log, "rolled_back")[0]
    assert rb.reason.startswith("gate error_rate failed in canary 5%")
    assert "0.0909" in rb.reason and "over the margin 0.0050" in rb.reason  # 400 errors / 4400 attempts
    assert rb.figures["error_rate"]["figures"]["candidate"] == 0.0909
    assert rb.figures["error_rate"]["figures"]["low"] > 0.005
    assert all(t.active == OLD for t in fleet.running.values())
    assert events(log, "settled")[0].reason.startswith("20/20 devices")


def test_label_mix_and_no_answer_are_compared_with_the_control_group():
    r = make_rollout()
    fleet = FakeFleet(r.devices)
    # a skewed label mix with feedback showing the candidate wrong: rolled back on feedback accuracy
    skewed = lambda r, t: sample(4000, labels={"yes": 3800, "no": 200}, feedback=(400, 200))  # noqa: E731
    r, log, _ = run(r, fleet, until=200, treatment=skewed,
                    control=lambda r, t: sample(4000, feedback=(400, 380)))
    assert r.status == "rolled_back"
    assert "gate feedback_accuracy failed" in r.reason
    mix = r.verdicts[r.stage]["gates"]
    assert any(g["gate"] == "label_mix" and "'yes' 0.950 vs control 0.500" in g["reason"] for g in mix)

    r2 = make_rollout()
    unsure = lambda r, t: sample(4000, no_answer=1600)  # noqa: E731
    r2, _, _ = run(r2, FakeFleet(r2.devices), until=200, treatment=unsure,
                   control=lambda r, t: sample(4000, no_answer=400))
    assert r2.status == "rolled_back" and "no_answer_rate 0.4000 vs control 0.1000" in r2.reason


def test_shadow_stage_rolls_back_on_low_agreement_before_any_canary_step():
    plan = [Stage("shadow", 100, 60), Stage("canary", 5, 60), Stage("canary", 100, 60)]
    r = make_rollout(plan=plan)
    fleet = FakeFleet(r.devices)
    r, log, _ = run(r, fleet, until=300, treatment=lambda r, t: sample(4000, shadow_agree=2000))
    assert r.status == "rolled_back" and r.stage == 0
    assert "gate shadow_agreement failed in shadow 100%" in r.reason and "0.500 over 4000" in r.reason
    assert all(t == r.baseline[d] for d, t in fleet.running.items())  # shadow taken off again
    assert not events(log, "promoted")


def test_shadow_then_canary_promotes_when_agreement_is_high():
    plan = [Stage("shadow", 100, 30), Stage("canary", 25, 30), Stage("canary", 100, 30, automation="full")]
    r = make_rollout(plan=plan)
    fleet = FakeFleet(r.devices)

    def treatment(r, t):
        return sample(4000, shadow_agree=3800) if r.current_stage.kind == "shadow" else sample(4000)

    r, log, _ = run(r, fleet, until=300, treatment=treatment, control=healthy)
    assert r.status == "completed"
    assert all(t.active == NEW and t.shadow is None for t in fleet.running.values())


def test_silent_device_is_retried_with_backoff_then_fails_the_rollout():
    r = make_rollout(policy=Policy(deadline_s=30.0, max_attempts=3, backoff=2.0))
    first = r.stage_devices(0)[0]
    fleet = FakeFleet(r.devices, silent={first})
    r, log, _ = run(r, fleet, until=400, treatment=healthy, control=healthy)
    retries = [e for e in events(log, "retried") if first in e.figures["devices"]]
    assert [e.t for e in retries] == [30, 90]  # deadlines 30 s, then 60 s after the retry
    assert r.status == "failed"
    assert f"1/1 devices failed in canary 5%" in r.reason and first in r.reason
    assert "after 3 sends" in r.reason
    assert events(log, "failed")[0].t == 210  # 90 + 120 s third deadline


def test_offline_device_converges_after_a_retry_when_it_returns():
    r = make_rollout()
    first = r.stage_devices(0)[0]
    fleet = FakeFleet(r.devices, offline={first})

    def bring_back(r, now):
        if now >= 45:
            fleet.offline.discard(first)
        return sample(4000)

    r, log, _ = run(r, fleet, until=400, treatment=bring_back, control=healthy)
    assert r.status == "completed"
    assert r.tracks[first].attempts == 2 and not events(log, "device_failed")


def test_device_event_fails_the_device_without_retry():
    r = make_rollout()
    first = r.stage_devices(0)[0]
    fleet = FakeFleet(r.devices, refuse={first})
    r, log, _ = run(r, fleet, until=100, treatment=healthy, control=healthy)
    assert r.status == "failed"
    assert "model_rolled_back: probation: errors" in r.reason
    assert not [e for e in events(log, "retried") if first in e.figures["devices"]]


def test_failures_under_the_threshold_do_not_stop_the_rollout():
    r = make_rollout(policy=Policy(deadline_s=10.0, max_attempts=1, max_failed_fraction=0.2))
    late = [d for d in r.devices if d not in r.stage_devices(1)][:2]  # only in the 100 % step
    fleet = FakeFleet(r.devices, silent=set(late))
    r, log, _ = run(r, fleet, until=400, treatment=healthy, control=healthy)
    assert r.status == "completed"  # 2/20 failed <= 20 %
    assert {e.figures["device"] for e in events(log, "device_failed")} == set(late)


def test_pause_stops_promotion_and_does_not_count_towards_bake():
    r = make_rollout()
    fleet = FakeFleet(r.devices)
    cmds = {20: [Command("c1", "pause", 20, "ana")], 220: [Command("c2", "resume", 220, "ana")]}
    r, log, _ = run(r, fleet, until=500, treatment=healthy, control=healthy, commands=cmds)
    assert r.status == "completed"
    first_promotion = events(log, "promoted")[0].t
    assert first_promotion >= 260  # 60 s bake of which 20 s before and 40 s after the 200 s pause
    assert events(log, "paused")[0].reason == "paused by ana"
    assert "after 200 s" in events(log, "resumed")[0].reason


def test_manual_approval_waits_before_each_promotion():
    r = make_rollout(approval="manual")
    fleet = FakeFleet(r.devices)
    r, log, _ = run(r, fleet, until=300, treatment=healthy, control=healthy)
    assert r.status == "awaiting_approval" and r.stage == 0
    assert "harken rollout approve r-test" in r.reason
    r, log2, _ = run(r, fleet, start=305, until=400, treatment=healthy, control=healthy,
                     commands={305: [Command("c1", "approve", 305, "ana")]})
    assert r.stage == 1 and r.status == "awaiting_approval"
    assert events(log2, "approved")[0].reason == "approved by ana"


def test_abort_and_rollback_revert_every_device():
    r = make_rollout()
    fleet = FakeFleet(r.devices)
    r, _, _ = run(r, fleet, until=100, treatment=healthy, control=healthy)
    assert r.stage == 1
    r, log, _ = run(r, fleet, start=105, until=200, commands={105: [Command("c1", "abort", 105, note="wrong model")]})
    assert r.status == "aborted" and r.reason == "aborted: wrong model" and r.settled
    assert all(t.active == OLD for t in fleet.running.values())

    done = make_rollout(rid="r-two")
    fleet2 = FakeFleet(done.devices)
    done, _, _ = run(done, fleet2, until=400, treatment=healthy, control=healthy)
    assert done.status == "completed"
    done, log, _ = run(done, fleet2, start=405, until=450, commands={405: [Command("c1", "rollback", 405)]})
    assert done.status == "rolled_back" and done.settled
    assert all(t.active == OLD for t in fleet2.running.values())


def test_a_command_that_does_not_apply_is_logged_and_ignored():
    r = make_rollout()
    d = decide(r, Observations(commands=[Command("c1", "approve", 0.0)]), 0.0)
    assert d.handled == ["c1"]
    assert d.log[0].event == "command_ignored" and "cannot approve a rollout that is pending" in d.log[0].reason
    assert d.rollout.status == "running"


def test_blue_green_switches_everyone_and_a_failed_gate_switches_everyone_back():
    r = make_rollout(plan=[Stage("blue-green", 100, 120)])
    fleet = FakeFleet(r.devices)
    slow = lambda r, t: sample(4000, latency_bin=17) if t > 40 else sample(100)  # noqa: E731
    r, log, _ = run(r, fleet, until=200, treatment=slow, control=healthy)
    started = events(log, "stage_started")[0]
    assert len(started.figures["devices"]) == 20
    from cloud.rollout.state import MIN_BASELINE_S

    src = r.sources()  # no previous stage: the control is the fleet's own recent past, at least MIN_BASELINE_S
    assert src.historical and src.control_since == started.t - max(120, MIN_BASELINE_S)
    assert r.status == "rolled_back" and "gate latency failed in blue-green 100%" in r.reason
    assert all(t.active == OLD for t in fleet.running.values())


def test_a_stage_that_cannot_decide_fails_closed_at_its_timeout_naming_what_it_waited_for():
    r = make_rollout(policy=Policy(deadline_s=30.0, stage_timeout_s=300.0))
    r, log, _ = run(r, FakeFleet(r.devices), until=400, treatment=lambda r, t: sample(10), control=healthy)
    assert r.status == "failed" and events(log, "timed_out")[0].t == 305
    assert r.reason.startswith("canary 5% could not decide within the stage timeout of 300 s and fails closed")
    assert "gate error_rate (candidate has 10 inferences, needs 200)" in r.reason
    assert all(t.active == OLD for t in r.baseline.values())

    # an excess that straddles the margin (15 % vs 10 %: 0.05 ± 0.03): the 5 % guard stage passes it
    # (within twice the margin), the 25 % stage can neither pass nor fail it, and fails closed
    unclear = make_rollout(policy=Policy(deadline_s=30.0, stage_timeout_s=300.0), rid="r-unclear")
    r, log, _ = run(unclear, FakeFleet(unclear.devices), until=800, treatment=lambda r, t: sample(4000, no_answer=600),
                    control=lambda r, t: sample(4000, no_answer=400))
    assert [e.reason for e in events(log, "stage_passed")] == ["canary 5% passed its gates after 60 s"]
    assert r.status == "failed" and r.reason.startswith("canary 25% could not decide within the stage timeout")
    assert "gate no_answer_rate (no_answer_rate 0.1500 vs control 0.1000" in r.reason
    assert "not yet within 0.0500 nor clearly over 0.0500" in r.reason


def test_the_default_stage_timeout_is_finite_and_longer_than_the_default_bake():
    from cloud.rollout.plan import DEFAULT_BAKE_S

    assert DEFAULT_BAKE_S < Policy().stage_timeout_s < 86400
    r = make_rollout(policy=Policy(deadline_s=30.0))
    r, _, _ = run(r, FakeFleet(r.devices), until=Policy().stage_timeout_s + 600, step_s=300.0,
                  treatment=lambda r, t: sample(10), control=healthy)
    assert r.status == "failed" and "stage timeout" in r.reason


def test_shadow_only_plan_takes_the_shadow_off_when_it_completes():
    r = make_rollout(plan=[Stage("shadow", 100, 30)])
    fleet = FakeFleet(r.devices)
    r, log, _ = run(r, fleet, until=200, treatment=lambda r, t: sample(4000, shadow_agree=3900))
    assert r.status == "completed" and r.settled
    assert all(t.shadow is None and t.active == OLD for t in fleet.running.values())


def test_restart_mid_stage_from_persisted_state_gives_the_same_outcome():
    r0 = make_rollout()
    straight, log_a, _ = run(r0, FakeFleet(r0.devices), until=400, treatment=healthy, control=healthy)

    fleet = FakeFleet(r0.devices)
    mid, log_b1, _ = run(r0, fleet, until=95, treatment=healthy, control=healthy)
    assert mid.status == "running" and mid.stage == 1  # stopped inside stage 2
    reloaded = Rollout.from_json(json.dumps(json.loads(mid.to_json())))  # what the store keeps
    end, log_b2, _ = run(reloaded, fleet, start=100, until=400, treatment=healthy, control=healthy)
    assert end.to_dict() == straight.to_dict()
    assert [(e.t, e.event) for e in log_b1 + log_b2] == [(e.t, e.event) for e in log_a]


def test_decide_does_not_modify_its_input():
    r = make_rollout()
    before = r.to_json()
    decide(r, Observations(), 0.0)
    assert r.to_json() == before


def test_gates_file_values_reach_the_verdict():
    r = make_rollout(gates=Gates(min_inferences=10000))
    r, _, _ = run(r, FakeFleet(r.devices), until=200, treatment=healthy, control=healthy)
    assert r.stage == 0 and "needs 10000" in r.verdicts[0]["gates"][0]["reason"]


def test_sources_name_each_sides_windows_and_every_devices_baseline():
    from cloud.rollout.state import BASELINE_LOOKBACK_S, MIN_BASELINE_S

    plan = [Stage("shadow", 100, 30), Stage("canary", 25, 60), Stage("canary", 100, 60)]
    r = make_rollout(plan=plan)
    fleet = FakeFleet(r.devices)

    def treatment(r, t):
        return sample(4000, shadow_agree=3900) if r.current_stage.kind == "shadow" else sample(4000)

    seen = []
    r, log, _ = run(r, fleet, until=80, treatment=lambda r, t: seen.append(r.sources()) or treatment(r, t),
                    control=healthy)
    shadow = seen[1]
    assert shadow.paired and shadow.treatment == r.devices and shadow.before_since is None
    canary_start = events(log, "stage_started")[1].t
    assert r.started_t == 0.0 and r.baseline_until_t == canary_start  # the shadow stage still ran the old model
    src = r.sources()
    assert src.treatment == r.devices[:5] and src.control == r.devices[5:] and src.control_since == canary_start
    assert (src.before_since, src.before_until) == (-BASELINE_LOOKBACK_S, canary_start) and not src.historical
    r, log, _ = run(r, fleet, start=85, until=130, treatment=treatment, control=healthy)
    assert r.status == "running" and r.stage == 2  # baking the 100 % stage
    last_start = events(log, "stage_started")[-1].t
    full = r.sources()
    assert full.historical and full.control == r.devices and full.control_until == last_start
    assert full.control_since == canary_start  # the previous stage's control devices: conditions of now
    assert full.before_since is None  # each device is paired with its own recent windows, not with before
