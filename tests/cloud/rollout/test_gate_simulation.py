"""Seeded simulated canaries through the real decision core, with the default gates, policy and
plan (5 → 25 → 100 %): equal models are rarely rolled back, worse ones are stopped early.

A fleet of 400 devices with log-normal traffic and device random effects on every metric
(``cloud.rollout.simulate``). ``scripts/bench_gates.py`` runs the same at 1,000 trials per kind.
"""
from __future__ import annotations

import math
from dataclasses import replace

from cloud.rollout.simulate import Effect, FleetModel, run_canary

FLEET = replace(FleetModel(), devices=400, inferences_per_h=400.0)


def wilson_high(k: int, n: int, z: float = 1.96) -> float:
    p = k / n
    return ((p + z * z / (2 * n)) + z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


def test_equal_models_are_rolled_back_clearly_less_than_five_percent_of_the_time():
    outcomes = [run_canary(FLEET, Effect(), seed) for seed in range(200)]
    assert all(o.status in ("completed", "rolled_back", "failed") for o in outcomes)  # every one ran to an end
    by_gate = sum(o.status == "rolled_back" for o in outcomes)
    by_timeout = sum(o.status == "failed" for o in outcomes)
    # 200 trials tell 5 % from 10 %; the 95 % upper bound must sit under the 5 % target
    assert wilson_high(by_gate + by_timeout, 200) < 0.05, [o.reason for o in outcomes if o.status != "completed"]
    assert by_gate <= 2  # the budget of the gates themselves is spent far less than 5 %
    completed = [o for o in outcomes if o.status == "completed"]
    assert all(len(o.decided) == 3 and o.decided[-1]["devices"] >= 390 for o in completed)


def test_candidates_worse_than_the_margins_are_stopped_before_the_whole_fleet_runs_them():
    for effect, gate in ((Effect(no_answer_add=0.10), "no_answer_rate"), (Effect(latency_factor=2.0), "latency")):
        outcomes = [run_canary(FLEET, effect, 1000 + seed) for seed in range(40)]
        stopped = [o for o in outcomes if o.status != "completed" and o.stage < 2]
        assert len(stopped) == 40, [(o.status, o.stage, o.reason[:120]) for o in outcomes]
        by_gate = [o for o in stopped if o.status == "rolled_back"]
        assert all(o.reason.startswith(f"gate {gate} failed") for o in by_gate)
        # the rest could neither pass nor fail on 20 devices, and failed closed at the timeout
        assert all("could not decide" in o.reason and f"gate {gate} (" in o.reason for o in stopped
                   if o.status == "failed")


def test_the_bench_prints_no_rate_when_a_canary_did_not_run_to_an_outcome():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "scripts" / "bench_gates.py"
    spec = importlib.util.spec_from_file_location("bench_gates", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ended = run_canary(FLEET, Effect(latency_factor=2.0), 7)
    stuck = run_canary(FLEET, Effect(), 8, max_s=600.0)  # stopped while its first stage still runs
    assert ended.status == "rolled_back" and stuck.status == "running"
    summary = bench.summarize("latency_x2", [ended, stuck], last_stage=2)
    assert "stopped_before_100" not in summary and "did not run to an outcome" in summary["error"]
    ok = bench.summarize("latency_x2", [ended], last_stage=2)
    assert ok["stopped_before_100"]["rate"] == 1.0 and ok["stopped_before_100"]["low"] < 1.0  # Wilson
