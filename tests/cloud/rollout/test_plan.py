"""Plans (strategies, durations, deterministic monotone steps, guard stages) and cohorts."""
from __future__ import annotations

import pytest

from cloud.rollout.cohort import parse, select
from cloud.rollout.plan import (Stage, assignment_order, build_plan, is_guard_stage, parse_duration, parse_steps,
                                step_count)
from shared.errors import ConfigError


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


def test_small_canary_steps_before_a_larger_one_are_guard_stages():
    plan = build_plan("shadow,canary", steps="1,5,25,100")
    assert [is_guard_stage(plan, i, 25.0) for i in range(len(plan))] == [False, True, True, False, False]
    assert not is_guard_stage(build_plan("canary", steps="10,100"), 1, 25.0)
    only_small = [Stage("canary", 5), Stage("canary", 20)]  # no stage of at least 25 % follows: no guard
    assert [is_guard_stage(only_small, i, 25.0) for i in range(2)] == [False, False]
    assert not is_guard_stage(build_plan("canary"), 0, 0.0)  # guards switched off
