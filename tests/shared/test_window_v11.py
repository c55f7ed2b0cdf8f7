"""Window schema 1.1: confidence by label, feedback credited by model, the audit sample.

Byte-exact encoding of a fixed window, exact and associative merges, and 1.0 windows read as
1.1 windows whose new fields are empty."""
from __future__ import annotations

import copy
import json
import zlib

import pytest

from shared import codec
from shared.errors import ProtocolError
from shared.messages import WINDOW_VERSION, decode, validate
from shared.window import credited_feedback, merge_windows, summarize
from tests.shared.windows import make_window, make_window_v11

A, B = "a" * 64, "b" * 64


def _fixed_window() -> dict:
    return {
        "kind": "window", "v": "1.1", "device": "d1", "boot": 2, "seq": 7, "t_start": 100.5, "duration_s": 10.0,
        "audio_start_s": 70.0, "agent_version": "0.1.0", "model": "m1", "automation": "assist",
        "software": {"frames": 333, "voiced_frames": 90, "dropped_frames": 0, "invalid_frames": 0,
                     "utterances": 2, "inferences": 2, "errors": 0, "cpu_s": 0.01, "rss_mb": 50.0,
                     "latency_ms": {}},
        "input": {"utterance_ms": [0, 2], "level_dbfs": [2, 0], "snr_db": [1, 1], "clipped_utterances": 0,
                  "features": [[1, 1]]},
        "output": {"labels": {"no": 1, "yes": 1}, "confidence": [0, 1, 1], "no_answer": 0, "deferred": 0,
                   "acted": 0, "suggested": 2, "audit_requested": 1,
                   "confidence_by_label": {"no": [0, 1, 0], "yes": [0, 0, 1]}},
        "feedback": {"pairs": [["yes", "yes", 1]], "audit": [["yes", "yes", 1]],
                     "by_model": {"m0": [["no", "up", 1]]}, "audit_by_model": {}},
    }


FIXED_JSON = (
    b'{"agent_version":"0.1.0","audio_start_s":70.0,"automation":"assist","boot":2,"device":"d1","duration_s":10.0,'
    b'"feedback":{"audit":[["yes","yes",1]],"audit_by_model":{},"by_model":{"m0":[["no","up",1]]},'
    b'"pairs":[["yes","yes",1]]},'
    b'"input":{"clipped_utterances":0,"features":[[1,1]],"level_dbfs":[2,0],"snr_db":[1,1],"utterance_ms":[0,2]},'
    b'"kind":"window","model":"m1","output":{"acted":0,"audit_requested":1,'
    b'"confidence":[0,1,1],"confidence_by_label":{"no":[0,1,0],"yes":[0,0,1]},"deferred":0,'
    b'"labels":{"no":1,"yes":1},"no_answer":0,"suggested":2},"seq":7,'
    b'"software":{"cpu_s":0.01,"dropped_frames":0,"errors":0,"frames":333,"inferences":2,"invalid_frames":0,'
    b'"latency_ms":{},"rss_mb":50.0,"utterances":2,"voiced_frames":90},"t_start":100.5,"v":"1.1"}'
)


def test_a_fixed_1_1_window_encodes_byte_for_byte():
    w = _fixed_window()
    assert WINDOW_VERSION == "1.1"
    payload = codec.encode(w)
    assert zlib.decompress(payload) == FIXED_JSON
    assert codec.encode(dict(reversed(list(w.items())))) == payload
    assert decode(payload, "window") == json.loads(FIXED_JSON)


def test_1_0_windows_still_validate_and_1_1_fields_are_checked():
    validate(make_window())  # no 1.1 field at all
    validate(make_window_v11())
    for path, bad in [(("output", "confidence_by_label"), {"yes": [1, 2]}),  # other bins than confidence
                      (("output", "confidence_by_label"), {"yes": "many"}),
                      (("output", "audit_requested"), -1),
                      (("feedback", "by_model"), {B: [["yes", "no"]]}),
                      (("feedback", "audit"), [["yes", "no", -1]]),
                      (("feedback", "audit_by_model"), [["yes", "no", 1]])]:
        w = make_window_v11()
        w[path[0]][path[1]] = bad
        with pytest.raises(ProtocolError) as info:
            validate(w)
        assert info.value.code == "bad_field" and path[1] in info.value.detail


def test_merge_adds_every_1_1_field_exactly():
    ws = [make_window_v11(seq=i, scale=i + 1) for i in range(3)]
    m = merge_windows(ws)
    assert m["output"]["audit_requested"] == 1 + 2 + 3
    for label in ("yes", "no"):
        assert m["output"]["confidence_by_label"][label] == [
            sum(w["output"]["confidence_by_label"][label][b] for w in ws) for b in range(11)]
    by_label = m["output"]["confidence_by_label"]
    assert [a + b for a, b in zip(by_label["yes"], by_label["no"])] == m["output"]["confidence"]
    assert m["feedback"]["audit"] == [["yes", "yes", 6]]
    assert m["feedback"]["by_model"] == {B: [["no", "no", 1 + 2 + 3], ["yes", "no", 3]]}
    assert m["feedback"]["audit_by_model"] == {B: [["no", "no", 3]]}
    s = summarize(m)
    assert (s["audit_requested"], s["audit_n"], s["audit_accuracy"]) == (6, 6, 1.0)


def test_merge_of_1_1_windows_is_associative_and_order_free():
    ws = [make_window_v11(seq=i, scale=i + 1, other=B if i % 2 else "c" * 64) for i in range(5)]
    whole = merge_windows(ws)
    assert merge_windows([merge_windows(ws[:2]), merge_windows(ws[2:])]) == whole
    assert merge_windows([merge_windows(ws[3:]), merge_windows(ws[:1]), merge_windows(ws[1:3])]) == whole
    assert sorted(whole["feedback"]["by_model"]) == [B, "c" * 64]


def _as_1_1(w: dict) -> dict:
    """A 1.0 window with the 1.1 fields written out empty."""
    w = copy.deepcopy(w)
    w["output"].update(confidence_by_label={}, audit_requested=0)
    w["feedback"].update(audit=[], by_model={}, audit_by_model={})
    return w


def test_1_0_windows_merge_with_1_1_windows_as_if_their_new_fields_were_empty():
    old = [make_window(seq=i, scale=2) for i in range(2)]
    new = [make_window_v11(seq=i + 2) for i in range(2)]
    mixed = merge_windows([old[0], new[0], old[1], new[1]])
    assert mixed == merge_windows([_as_1_1(old[0]), new[0], _as_1_1(old[1]), new[1]])
    assert mixed["output"]["audit_requested"] == 2
    assert mixed["feedback"]["pairs"] == merge_windows(old + new)["feedback"]["pairs"]
    only_old = merge_windows(old)  # a merge always carries the 1.1 fields
    assert only_old["output"]["confidence_by_label"] == {} and only_old["feedback"]["by_model"] == {}
    assert summarize(only_old)["audit_accuracy"] is None


def test_credited_feedback_reads_a_models_labels_from_any_window():
    w = make_window_v11(model=A, other=B, seq=4)
    assert credited_feedback(w, A) == w["feedback"]["pairs"]
    assert credited_feedback(w, A, audit=True) == [["yes", "yes", 1]]
    assert credited_feedback(w, B) == [["no", "no", 5], ["yes", "no", 1]]
    assert credited_feedback(w, B, audit=True) == [["no", "no", 1]]
    assert credited_feedback(w, "c" * 64) == [] and credited_feedback(make_window(), B) == []
