"""A simulated person who confirms or corrects some of a device's decisions, a little later.

The person sees each decision (a ``DecisionSink``), looks up what was really said from the
stream's ``Timeline`` (the clip the utterance overlaps most), and with probability ``rate``
answers after ``delay_s`` of audio time: ``confirm`` when the model was right, the true
label when it was wrong. Answers are appended as JSON lines to the agent's feedback file,
the same input ``harken agent feedback`` writes to, so they go through the agent's own
reader. An utterance that overlaps no clip (the gate fired on background noise) is answered
``_silence_`` when the model knows that label, else left alone.
"""
from __future__ import annotations

import json
import os
import heapq

import numpy as np

from edge.decisions import Decision, DecisionSink
from edge.sim.audio import SILENCE_LABEL, Timeline

DELAY_S = (1.0, 8.0)


class Person(DecisionSink):
    def __init__(self, timeline: Timeline, feedback_path: str | os.PathLike, rate: float,
                 rng: np.random.Generator, labels: list[str] | None = None, delay_s: tuple[float, float] = DELAY_S):
        self.timeline, self.rate, self.rng, self.delay_s = timeline, float(rate), rng, delay_s
        self.labels = set(labels or ())
        self.path = os.fspath(feedback_path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o644)
        self._due: list[tuple[float, int, bytes]] = []  # a heap by due time
        self.seen = self.answered = self.confirmed = self.corrected = 0  # answered: written to the file

    def emit(self, decision: Decision) -> None:
        self.seen += 1
        self._send_due(decision.audio_end_s)
        if self.rate <= 0 or self.rng.random() >= self.rate:
            return
        truth = self.timeline.label_at(decision.audio_start_s, decision.audio_end_s)
        if truth is None and SILENCE_LABEL in self.labels:
            truth = SILENCE_LABEL
        if truth is None:
            return
        if truth == decision.label:
            line = {"utterance": decision.utterance, "confirm": True}
            self.confirmed += 1
        else:
            line = {"utterance": decision.utterance, "label": truth}
            self.corrected += 1
        due = decision.audio_end_s + float(self.rng.uniform(*self.delay_s))
        heapq.heappush(self._due, (due, self.seen, (json.dumps(line, sort_keys=True) + "\n").encode()))

    def _send_due(self, now_s: float) -> None:
        while self._due and self._due[0][0] <= now_s:
            os.write(self._fd, heapq.heappop(self._due)[2])  # one short write per line: never a torn line
            self.answered += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
