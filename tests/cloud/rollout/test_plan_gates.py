"""Plans (strategies, durations, deterministic monotone steps) and gate arithmetic."""
from __future__ import annotations

import math

import pytest

from cloud.rollout.cohort import parse, select
from cloud.rollout.gates import Gates, Sample, evaluate, excess_z, js_distance, overall
from cloud.rollout.plan import Stage, assignment_order, build_plan, parse_duration, parse_steps, step_count
from shared.errors import ConfigError

from tests.cloud.rollout.fakes import sample
from tests.shared.windows import make_window


@pytest.mark.parametrize("text,seconds", [("90", 90.0), ("30s", 30.0), ("10m", 600.0), ("1.5h", 5400.0),
                                          ("250ms", 0.25), (45, 45.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["ten minutes", "-5s", "5y", ""])
def test_bad_durations_say_how_to_write_one(bad):
    with pytest.raises(ConfigError, match="e.g. 90, 30s, 10m or 1h"):
        parse_duration(bad)


def test_steps_end_at_100_and_must_increase():
    assert parse_steps("5,25") == (5.0, 25.0, 100.0)
    assert parse_steps(None) == (5.0, 25.0, 100.0)
    for bad in ("25,5", "0,50", "5,5,100", "x"):
        with pytest.raises(ConfigError, match="--steps"):
            parse_steps(bad)


def test_strategies_become_stages(tmp_path):
    assert build_plan("canary", steps="10,50", bake="5m") == [Stage("canary", 10, 300), Stage("canary", 50, 300),
                                                              Stage("canary", 100, 300)]
    assert [s.kind for s in build_plan("shadow,canary")] == ["shadow", "canary", "canary", "canary"]
    assert build_plan("blue-green", bake=60) == [Stage("blue-green", 100, 60)]
    plan = tmp_path / "ladder.toml"
    plan.write_text('[[stage]]\nkind = "shadow"\nbake = "2m"\n'
                    '[[stage]]\nkind = "canary"\npercent = 100\nautomation = "assist"\n'
                    '[[stage]]\nkind = "canary"\npercent = 100\nautomation = "full"\nbake = "1h"\n')
    ladder = build_plan(str(plan), bake="10m")
    assert [(s.kind, s.automation, s.bake_s) for s in ladder] == [
        ("shadow", None, 120.0), ("canary", "assist", 600.0), ("canary", "full", 3600.0)]
    with pytest.raises(ConfigError, match="strategy 'rainbow'"):
        build_plan("rainbow")
    bad = tmp_path / "bad.toml"
    bad.write_text('[[stage]]\nkind = "canary"\ncolour = "red"\n')
    with pytest.raises(ConfigError, match="unknown stage keys"):
        build_plan(str(bad))
    with pytest.raises(ConfigError, match="blue-green stage covers the whole cohort"):
        Stage("blue-green", 50)


def test_assignment_is_deterministic_and_steps_are_monotone():
    devices = [f"dev-{i}" for i in range(200)]
    order = assignment_order("r-1", devices)
    assert order == assignment_order("r-1", list(reversed(devices)))  # input order does not matter
    assert order != assignment_order("r-2", devices)  # another rollout, another order
    steps = [order[:step_count(p, len(order))] for p in (1, 5, 25, 50, 100)]
    assert [len(s) for s in steps] == [2, 10, 50, 100, 200]
    assert all(set(a) <= set(b) for a, b in zip(steps, steps[1:]))
    assert step_count(5, 3) == 1 and step_count(100, 0) == 0 and step_count(34, 3) == 2


def test_cohort_selectors():
    fleet = [{"device": "a", "state": {"models": {"active": "abc123" + "0" * 58}}, "tags": ["lab"]},
             {"device": "b", "state": {"models": {"active": "ffff" + "0" * 60}}, "tags": []},
             {"device": "c", "state": None, "tags": ["lab"]}]  # never reported: cannot be rolled out to
    assert select("fleet", fleet) == ["a", "b"]
    assert select("tag:lab", fleet) == ["a"]
    assert select("model:abc1", fleet) == ["a"]
    assert select("device:b,tag:lab", fleet) == ["a", "b"]
    for bad in ("everyone", "tag:", "fleet:x", ""):
        with pytest.raises(ConfigError):
            parse(bad)


def test_js_distance_and_excess_z():
    assert js_distance({"a": 10}, {"a": 3}) == 0.0
    assert js_distance({"a": 10}, {"b": 10}) == pytest.approx(1.0)
    assert js_distance({}, {"a": 1}) is None
    # 10 % vs 5 % on 1000 each: a real excess over a 1 % margin
    assert excess_z(100, 1000, 50, 1000, 0.01) == pytest.approx(
        (0.05 - 0.01) / math.sqrt(0.075 * 0.925 * 2 / 1000))
    assert excess_z(0, 0, 5, 10, 0.0) == 0.0


def test_a_small_excess_on_a_small_sample_holds_rather_than_fails():
    g = Gates(min_inferences=50)
    noisy = evaluate("canary", sample(60, no_answer=12), sample(60, no_answer=4), g)
    assert {r.gate: r.verdict for r in noisy}["no_answer_rate"] == "pass"  # 20 % vs 6.7 %: z < 2.33
    clear = evaluate("canary", sample(2000, no_answer=400), sample(2000, no_answer=130), g)
    nar = next(r for r in clear if r.gate == "no_answer_rate")
    assert nar.verdict == "fail" and nar.figures["candidate"] == 0.2 and nar.figures["control"] == 0.065


def test_ceilings_do_not_blame_the_candidate_for_what_the_control_does_too():
    slow = sample(400, latency_bin=17)  # >= 1000 ms
    results = {r.gate: r for r in evaluate("canary", slow, sample(400, latency_bin=17), Gates())}
    assert results["latency_p99"].verdict == "pass"
    results = {r.gate: r for r in evaluate("canary", slow, sample(400), Gates())}
    assert results["latency_p99"].verdict == "fail" and "above the ceiling" in results["latency_p99"].reason
    alone = {r.gate: r for r in evaluate("canary", slow, Sample(), Gates())}
    assert alone["latency_p99"].verdict == "fail" and alone["label_mix"].verdict == "skip"


def test_feedback_gate_compares_accuracy_with_control():
    g = Gates(min_feedback=30)
    worse = {r.gate: r for r in evaluate("canary", sample(400, feedback=(200, 120)), sample(400, feedback=(200, 180)), g)}
    assert worse["feedback_accuracy"].verdict == "fail" and "0.600 vs control 0.900" in worse["feedback_accuracy"].reason
    few = {r.gate: r for r in evaluate("canary", sample(400, feedback=(10, 2)), sample(400, feedback=(200, 180)), g)}
    assert few["feedback_accuracy"].verdict == "wait"
    assert overall(list(few.values())) == "wait"


def test_sample_sums_windows_of_any_model():
    a = make_window("d1", seq=0, model="a" * 64, labels={"yes": 6, "no": 4})
    b = make_window("d2", seq=0, model="b" * 64, labels={"yes": 1, "up": 9})
    b["software"]["errors"] = 2
    b["shadow"] = {"compared": 10, "agree": 7, "confidence": [0] * 11, "labels": {"yes": 10}}
    s = Sample.of([a, b])
    assert (s.windows, s.inferences, s.errors, s.no_answer) == (2, 20, 2, 2)
    assert s.labels == {"yes": 7, "no": 4, "up": 9}
    assert (s.shadow_compared, s.shadow_agree, s.shadow_agreement) == (10, 7, 0.7)
    assert s.error_rate == pytest.approx(2 / 22)
    assert (s.feedback_n, s.feedback_correct) == (4, 2)


def test_shadow_agreement_just_under_the_minimum_waits_and_clearly_under_fails():
    g = Gates(min_shadow_compared=100, min_shadow_agreement=0.8)
    near = {r.gate: r for r in evaluate("shadow", sample(200, shadow_agree=156), sample(200), g)}
    assert near["shadow_agreement"].verdict == "wait"  # 0.78 ± 0.029: could be 0.8
    assert "not clearly" in near["shadow_agreement"].reason
    far = {r.gate: r for r in evaluate("shadow", sample(200, shadow_agree=120), sample(200), g)}
    assert far["shadow_agreement"].verdict == "fail" and far["shadow_agreement"].figures["upper"] < 0.8
    more = {r.gate: r for r in evaluate("shadow", sample(5000, shadow_agree=3900), sample(200), g)}
    assert more["shadow_agreement"].verdict == "fail"  # 0.78 on 5000 is clearly under 0.8


def test_the_latency_ratio_gate_ignores_a_small_p99_doubled_by_scheduling_noise():
    g = Gates(min_inferences=50)
    small = {r.gate: r for r in evaluate("canary", sample(400, latency_bin=10), sample(400, latency_bin=8), g)}
    assert small["latency_p99"].verdict == "pass"  # ~31 ms vs ~10 ms: over 2x, but under the 50 ms floor
    large = {r.gate: r for r in evaluate("canary", sample(400, latency_bin=13), sample(400, latency_bin=11), g)}
    assert large["latency_p99"].verdict == "fail" and "over 2.0x the control" in large["latency_p99"].reason
