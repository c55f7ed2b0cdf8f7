"""The simulator's ground truth per decision, for the simulated labeller."""
from __future__ import annotations

from edge.decisions import Decision, DecisionSink
from edge.sim.audio import Timeline
from edge.sim.truth import TRUTH_FILE, TruthLog, read_truth
from shared.audio import SAMPLE_RATE as SR


class _Collect(DecisionSink):
    def __init__(self):
        self.seen, self.closed = [], False

    def emit(self, decision):
        self.seen.append(decision.utterance)

    def close(self):
        self.closed = True


def _decision(uid, start, end, label="yes"):
    return Decision(utterance=uid, audio_start_s=start, audio_end_s=end, label=label, confidence=0.5,
                    action="log", automation="shadow", model="m")


def test_every_decision_is_logged_with_what_was_really_said_and_handed_on(tmp_path):
    tl = Timeline()
    tl.add(1 * SR, 2 * SR, "yes", "a")
    tl.add(3 * SR, 4 * SR, "no", "a")
    inner = _Collect()
    log = TruthLog(tl, tmp_path / TRUTH_FILE, ["yes", "no", "_silence_"], inner=inner)
    log.emit(_decision("b-1", 1.1, 1.9))  # right
    log.emit(_decision("b-2", 2.9, 3.9))  # wrong: it was "no" (the clip it overlaps most)
    log.emit(_decision("b-3", 5.0, 5.5, "no"))  # the gate fired between clips
    log.close()
    assert read_truth(tmp_path / TRUTH_FILE) == {"b-1": "yes", "b-2": "no", "b-3": "_silence_"}
    assert inner.seen == ["b-1", "b-2", "b-3"] and inner.closed and log.written == 3


def test_without_a_silence_label_a_decision_on_no_clip_has_no_truth_and_a_torn_line_is_skipped(tmp_path):
    path = tmp_path / TRUTH_FILE
    log = TruthLog(Timeline(), path, ["yes", "no"])
    log.emit(_decision("b-1", 0.0, 0.5))
    log.close()
    assert path.read_text() == ""
    path.write_text('{"label": "yes", "utterance": "b-2"}\n{"label": "n')  # a crash mid-line
    assert read_truth(path) == {"b-2": "yes"} and read_truth(tmp_path / "missing.jsonl") == {}
