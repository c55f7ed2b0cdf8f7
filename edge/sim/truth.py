"""What was really said, for every decision a simulated device makes.

``TruthLog`` is a decision sink that looks each decision up in the stream's ``Timeline``
(the clip the utterance overlaps most, ``_silence_`` when it overlaps none and the model
knows that label) and appends ``{"utterance", "label"}`` to ``truth.jsonl`` in the device's
state directory, then hands the decision on to the sink it wraps (the simulated person).
A simulated labeller reads it to label the device's field samples by their utterance id.
"""
from __future__ import annotations

import json
import os

from edge.decisions import Decision, DecisionSink
from edge.sim.audio import Timeline
from edge.sim.person import JsonLinesFile, true_label

TRUTH_FILE = "truth.jsonl"


class TruthLog(DecisionSink):
    def __init__(self, timeline: Timeline, path: str | os.PathLike, labels: list[str],
                 inner: DecisionSink | None = None):
        self.timeline, self.labels, self.inner = timeline, frozenset(labels), inner
        self._out = JsonLinesFile(path)
        self.written = 0

    def emit(self, decision: Decision) -> None:
        truth = true_label(self.timeline, decision, self.labels)
        if truth is not None:
            self._out.write({"utterance": decision.utterance, "label": truth})
            self.written += 1
        if self.inner is not None:
            self.inner.emit(decision)

    def close(self) -> None:
        self._out.close()
        if self.inner is not None:
            self.inner.close()


def read_truth(path: str | os.PathLike) -> dict[str, str]:
    """utterance id → true label, from a device's truth log (a torn last line is skipped)."""
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                    out[str(entry["utterance"])] = str(entry["label"])
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    return out
