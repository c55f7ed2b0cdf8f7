"""Schema 1.1 on the real agent pipeline (espeak-ng speech, webrtcvad, onnxruntime, the model
lab's trained bundle): feedback credited to the model that made the prediction, the audit
sample, and confidence by label."""
from __future__ import annotations

import numpy as np
import pytest

from edge.decisions import AuditSampler
from edge.pipeline import StaticModels
from shared.codec import encode
from shared.messages import decode
from shared.window import credited_feedback, merge_windows
from tests.edge.conftest import run_pipeline

SR = 16000


def _other_label(model, label: str) -> str:
    return next(name for name in model.labels if name != label)


def _swap_and_label(speech, old, new, **kwargs):
    """7 s on ``old``, then ``new``; labels for both models' predictions, one while no window is
    open. Returns (windows, old's first two decisions, new's first decision, the true label)."""
    x = speech[0]
    provider = StaticModels(old)
    decisions, windows, pipeline = run_pipeline(x[:7 * SR], 4096, provider, flush=False, **kwargs)
    before = list(decisions)
    assert before and all(d.model == old.sha256 for d in before)
    provider.active = new  # e.g. a rollout step: the next utterance is the new model's
    for i in range(7 * SR, 16 * SR, 4096):
        pipeline.feed(x[i:min(i + 4096, 16 * SR)])
    after = [d for d in decisions if d.model == new.sha256]
    assert after, "the new model made no prediction"
    late = before[0]  # a person labels the old model's prediction while the new model's window is open
    truth = _other_label(old, late.label)
    assert pipeline.feedback(late.utterance, truth)
    assert pipeline.feedback(after[0].utterance, confirm=True)
    pipeline.flush()
    assert pipeline.feedback(before[1].utterance, confirm=True)  # no window open: held for the next one
    pipeline.feed(x[16 * SR:18 * SR])
    pipeline.flush()
    return windows, before, after, truth


def test_feedback_after_a_swap_is_credited_to_the_model_that_made_the_prediction(speech, lab_model, models):
    old, new = lab_model, models[0]
    windows, before, after, truth = _swap_and_label(speech, old, new)
    late = before[0]
    assert windows[0]["model"] == old.sha256 and windows[-1]["model"] == new.sha256
    current = windows[-2]  # the new model's window open when the first two labels came
    assert current["model"] == new.sha256
    assert current["feedback"]["pairs"] == [[after[0].label, after[0].label, 1]]
    assert current["feedback"]["by_model"] == {old.sha256: [[truth, late.label, 1]]}
    assert windows[-1]["feedback"]["by_model"] == {old.sha256: [[before[1].label, before[1].label, 1]]}
    assert all(decode(encode(w), "window") == w for w in windows)
    old_labels = sorted(p for w in windows for p in credited_feedback(w, old.sha256))
    assert old_labels == sorted([[truth, late.label, 1], [before[1].label, before[1].label, 1]])
    assert [p for w in windows for p in credited_feedback(w, new.sha256)] == [[after[0].label, after[0].label, 1]]


def test_audited_labels_after_a_swap_are_credited_the_same_way(speech, lab_model, models):
    windows, *_ = _swap_and_label(speech, lab_model, models[0], audit_rate=1.0)
    assert any(w["feedback"].get("by_model") for w in windows)
    for w in windows:  # every prediction audited: the audit sections mirror the others
        fb = w["feedback"]  # empty 1.1 sections are left out of the agent's windows
        assert fb.get("audit", []) == fb["pairs"] and fb.get("audit_by_model", {}) == fb.get("by_model", {})


@pytest.fixture(scope="module")
def long_speech(speech):
    return np.concatenate([speech[0]] * 6)  # ~150 s, ~100 utterances


def test_audit_flags_are_seeded_chunking_invariant_and_near_the_rate(long_speech, lab_model):
    runs = [run_pipeline(long_speech, chunk, StaticModels(lab_model), audit_rate=0.25, audit_seed="kitchen")
            for chunk in (480, 4096)]
    (decisions, windows, pipeline), (decisions_b, _, _) = runs
    flags = [d.audit for d in decisions]
    assert flags == [d.audit for d in decisions_b]
    sampler = AuditSampler(0.25, "kitchen")
    assert flags == [sampler.flag(d.utterance) for d in decisions]  # the utterance id alone decides
    n, k = len(decisions), sum(flags)
    assert n >= 80
    assert abs(k - 0.25 * n) <= 3.5 * np.sqrt(n * 0.25 * 0.75)  # binomial; the exact rate: tests/edge/test_decisions
    assert sum(w["output"]["audit_requested"] for w in windows) == k == pipeline.stats["audit_requested"]
    other_seed = run_pipeline(long_speech[:40 * SR], 4096, StaticModels(lab_model), audit_rate=0.25,
                              audit_seed="hall")[0]
    assert [d.audit for d in other_seed] != flags[:len(other_seed)]


def test_audited_feedback_counts_in_feedback_audit(speech, lab_model):
    events = []
    decisions, windows, pipeline = run_pipeline(speech[0], 4096, StaticModels(lab_model), flush=False,
                                                audit_rate=0.3, audit_seed="s1", on_feedback=events.append)
    audited = [d for d in decisions if d.audit]
    plain = [d for d in decisions if not d.audit]
    assert audited and plain
    truth = _other_label(lab_model, audited[0].label)
    assert pipeline.feedback(audited[0].utterance, truth)
    assert pipeline.feedback(plain[0].utterance, confirm=True)
    pipeline.flush()
    m = merge_windows(windows)
    assert sorted(m["feedback"]["pairs"]) == sorted([[truth, audited[0].label, 1],
                                                     [plain[0].label, plain[0].label, 1]])
    assert m["feedback"]["audit"] == [[truth, audited[0].label, 1]]
    assert m["feedback"]["by_model"] == {} and m["feedback"]["audit_by_model"] == {}
    assert [e["audit"] for e in events] == [True, False]
    assert pipeline.stats["feedback_audit"] == 1


@pytest.mark.parametrize("level", ["human_only", "shadow"])
def test_audit_requests_travel_on_decisions_so_none_at_human_only(speech, lab_model, level):
    decisions, windows, pipeline = run_pipeline(speech[0], 4096, StaticModels(lab_model), automation=level,
                                                audit_rate=1.0)
    requested = sum(w["output"]["audit_requested"] for w in windows)
    assert pipeline.stats["inferences"] > 0
    if level == "human_only":
        assert decisions == [] and requested == 0
    else:
        assert all(d.audit for d in decisions) and requested == len(decisions) == pipeline.stats["inferences"]


def test_confidence_by_label_splits_the_confidence_histogram(long_speech, lab_model):
    _, windows, _ = run_pipeline(long_speech, 4096, StaticModels(lab_model))
    for w in windows:
        out = w["output"]
        by_label = out["confidence_by_label"]
        assert sorted(by_label) == sorted(out["labels"])
        assert {k: sum(c) for k, c in by_label.items()} == out["labels"]
        summed = [sum(col) for col in zip(*by_label.values())] if by_label else [0] * len(out["confidence"])
        assert summed == out["confidence"]
    assert sum(len(w["output"]["confidence_by_label"]) for w in windows) > len(windows)  # several labels seen
