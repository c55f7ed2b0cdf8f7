"""Automation levels and decision sinks, on the real pipeline with espeak-ng speech."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from edge.decisions import (DEFAULT_AUDIT_RATE, AuditSampler, CallbackSink, Decision, JsonLinesSink, action_for,
                            check_level)
from edge.pipeline import StaticModels
from shared.errors import ConfigError
from shared.messages import AUTOMATION_LEVELS
from tests.edge.conftest import run_pipeline

EXPECTED = {  # level -> (action when confident, action when below threshold)
    "human_only": ("none", "none"), "shadow": ("log", "log"), "assist": ("suggest", "no_answer"),
    "partial": ("act", "defer"), "full": ("act", "act"),
}


@pytest.mark.parametrize("level", AUTOMATION_LEVELS)
def test_action_table(level):
    assert (action_for(level, False), action_for(level, True)) == EXPECTED[level]


def test_unknown_level_is_a_config_error():
    with pytest.raises(ConfigError, match="one of human_only"):
        check_level("auto")
    with pytest.raises(ConfigError):
        action_for("sometimes", False)


def _decision(n: int) -> Decision:
    return Decision(utterance=f"1-{n}", audio_start_s=1.5, audio_end_s=2.25, label="yes", confidence=0.75,
                    action="act", automation="full", model="ab" * 32, t=12.5)


def test_json_lines_sink_writes_one_object_per_line_to_a_stream_and_appends_to_a_file(tmp_path):
    stream = io.StringIO()
    sink = JsonLinesSink(stream)
    sink.emit(_decision(1))
    sink.emit(_decision(2))
    lines = stream.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [_decision(1).to_dict(), _decision(2).to_dict()]
    path = tmp_path / "decisions.jsonl"
    for n in (1, 2):
        file_sink = JsonLinesSink(path)
        file_sink.emit(_decision(n))
        file_sink.close()
    assert [json.loads(line)["utterance"] for line in path.read_text().splitlines()] == ["1-1", "1-2"]


def test_callback_sink_hands_over_the_decision():
    got = []
    CallbackSink(got.append).emit(_decision(7))
    assert got == [_decision(7)]


@pytest.fixture(scope="module")
def by_level(speech, models):
    """Decisions and windows of the same speech at every level."""
    return {level: run_pipeline(speech[0], 4096, StaticModels(models[0]), automation=level)
            for level in AUTOMATION_LEVELS}


def _totals(windows, section, name):
    return sum(w[section][name] for w in windows)


@pytest.mark.parametrize("level", AUTOMATION_LEVELS)
def test_each_level_acts_as_documented_on_real_speech(by_level, models, level):
    decisions, windows, pipeline = by_level[level]
    inferences = _totals(windows, "software", "inferences")
    assert inferences == len(by_level["full"][0]) > 10
    if level == "human_only":
        assert decisions == [] and pipeline.decisions == 0
    else:
        assert len(decisions) == inferences
        for d in decisions:
            assert d.action == EXPECTED[level][d.confidence < models[0].threshold]
            assert d.automation == level and d.model == models[0].sha256
    actions = [d.action for d in decisions]
    assert _totals(windows, "output", "acted") == actions.count("act") == pipeline.stats["acted"]
    assert _totals(windows, "output", "suggested") == actions.count("suggest")
    assert _totals(windows, "output", "deferred") == actions.count("defer")
    assert all(w["automation"] == level for w in windows)
    # the low-confidence count is a property of the model's output, whatever the level
    assert _totals(windows, "output", "no_answer") == _totals(by_level["full"][1], "output", "no_answer") > 0


def test_levels_see_the_same_predictions(by_level):
    ref = [(d.utterance, d.label, d.confidence) for d in by_level["full"][0]]
    for level in ("shadow", "assist", "partial"):
        assert [(d.utterance, d.label, d.confidence) for d in by_level[level][0]] == ref


def test_set_automation_applies_from_the_next_utterance(speech, models):
    x = speech[0]
    half = len(x) // 2
    decisions, windows, pipeline = run_pipeline(x[:half], 4096, StaticModels(models[0]), automation="full",
                                                flush=False)
    before = len(decisions)
    pipeline.set_automation("shadow")
    for i in range(half, len(x), 4096):
        pipeline.feed(x[i:i + 4096])
    pipeline.flush()
    assert 0 < before < len(decisions)
    assert {d.action for d in decisions[:before]} == {"act"}
    assert {d.action for d in decisions[before:]} == {"log"}
    assert windows[-1]["automation"] == "shadow"
    with pytest.raises(ConfigError):
        pipeline.set_automation("everything")


def test_a_failing_sink_is_counted_and_the_stream_goes_on(speech, models):
    def broken(decision):
        raise OSError("disk full")

    _, windows, pipeline = run_pipeline(speech[0], 4096, StaticModels(models[0]), automation="full",
                                        sink=CallbackSink(broken))
    stats = pipeline.stats
    assert stats["sink_errors"] == stats["decisions"] == stats["inferences"] > 10
    assert sum(w["output"]["acted"] for w in windows) == stats["inferences"]


def test_audit_sampler_flags_its_rate_and_tells_it_from_twice_the_rate():
    """20,000 utterance ids at the default 2 %: 400 expected (sd 19.8); the bounds are 4 sd wide,
    and twice the rate (800) is far outside them."""
    sampler = AuditSampler(seed="kitchen-01")
    assert sampler.rate == DEFAULT_AUDIT_RATE == 0.02
    keys = [f"{boot}-{n}" for boot in range(1, 5) for n in range(1, 5001)]
    flagged = [k for k in keys if sampler.flag(k)]
    assert 320 <= len(flagged) <= 480
    assert flagged == [k for k in keys if AuditSampler(0.02, "kitchen-01").flag(k)]  # seeded: reproducible
    other = {k for k in keys if AuditSampler(0.02, "hall-02").flag(k)}
    assert len(other & set(flagged)) < 40  # another device audits other utterances (expected overlap 8)
    draws = np.array([sampler.uniform(k) for k in keys])
    assert np.histogram(draws, bins=10, range=(0, 1))[0].min() > 1800  # uniform: 2,000 per decile
    assert not any(AuditSampler(0.0, "x").flag(k) for k in keys[:1000])
    assert all(AuditSampler(1.0, "x").flag(k) for k in keys[:1000])


@pytest.mark.parametrize("rate", [-0.1, 1.5, True, "0.1"])
def test_audit_rate_is_checked(rate):
    with pytest.raises(ConfigError, match="audit_rate"):
        AuditSampler(rate)


def test_the_audit_flag_is_written_with_the_decision():
    stream = io.StringIO()
    JsonLinesSink(stream).emit(Decision(utterance="1-1", audio_start_s=0.0, audio_end_s=0.5, label="yes",
                                        confidence=0.9, action="act", automation="full", model="ab" * 32, audit=True))
    assert json.loads(stream.getvalue())["audit"] is True
    assert _decision(1).audit is False
