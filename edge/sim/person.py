"""A simulated person who confirms or corrects some of a device's decisions, a little later.

The person sees each decision (a ``DecisionSink``), looks up what was really said from the
stream's ``Timeline`` (the clip the utterance overlaps most), and answers after ``delay_s`` of
audio time: ``confirm`` when the model was right, the true label when it was wrong. It
answers a decision flagged for audit (``Decision.audit``) with probability ``audit_rate``,
any other with probability ``rate``. An utterance that overlaps no clip (the gate fired on
background noise) is answered ``_silence_`` when the model knows that label, else left alone.

Where answers go is the caller's: ``FeedbackFileWriter`` appends JSON lines to the agent's
feedback file (the input ``harken agent feedback`` writes to, so they go through the agent's
own reader; an audited answer carries ``"audit": true``), ``PipelineFeedback`` hands them to
``Pipeline.feedback`` directly (the offline harness). An answer is handed over at the first
decision past its due time, or when the caller asks (``deliver_due``, ``deliver_next``), never
earlier.
"""
from __future__ import annotations

import heapq
import inspect
import json
import os
from typing import Callable, NamedTuple

import numpy as np

from edge.decisions import Decision, DecisionSink
from edge.sim.audio import SILENCE_LABEL, Timeline

DELAY_S = (1.0, 8.0)


def true_label(timeline: Timeline, decision: Decision, labels) -> str | None:
    """What was really said during a decision: the label of the clip it overlaps most, else
    ``_silence_`` when the model knows that label (the gate fired on background noise), else None."""
    truth = timeline.label_at(decision.audio_start_s, decision.audio_end_s)
    return SILENCE_LABEL if truth is None and SILENCE_LABEL in labels else truth


class JsonLinesFile:
    """JSON objects appended one per line to a file emptied at open (one short write per line: never
    torn); nothing is written after ``close``."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o644)

    def write(self, obj: dict) -> None:
        if self._fd is not None:
            os.write(self._fd, (json.dumps(obj, sort_keys=True) + "\n").encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Answer(NamedTuple):
    utterance: str
    label: str | None  # None: a confirmation
    audit: bool

    def line(self) -> dict:
        out: dict = {"utterance": self.utterance}
        out.update({"confirm": True} if self.label is None else {"label": self.label})
        if self.audit:
            out["audit"] = True
        return out


class FeedbackFileWriter(JsonLinesFile):
    """Answers as JSON lines appended to a feedback file."""

    def __call__(self, answer: Answer) -> None:
        self.write(answer.line())


class PipelineFeedback:
    """Answers handed to a pipeline's ``feedback`` (its ``audit`` flag too, when it takes one)."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self._takes_audit = "audit" in inspect.signature(pipeline.feedback).parameters
        self.accepted = 0

    def __call__(self, answer: Answer) -> None:
        extra = {"audit": answer.audit} if self._takes_audit else {}
        ok = self.pipeline.feedback(answer.utterance, answer.label, confirm=answer.label is None, **extra)
        self.accepted += bool(ok)

    def close(self) -> None:
        pass


class Person(DecisionSink):
    def __init__(self, timeline: Timeline, answer: Callable[[Answer], None], rate: float,
                 rng: np.random.Generator, labels: list[str] | None = None, delay_s: tuple[float, float] = DELAY_S,
                 audit_rate: float = 1.0):
        self.timeline, self.rate, self.audit_rate = timeline, float(rate), float(audit_rate)
        self.rng, self.delay_s = rng, delay_s
        self.answer = answer
        self.labels = set(labels or ())
        self._due: list[tuple[float, int, Answer]] = []  # a heap by due time
        self.seen = self.answered = self.confirmed = self.corrected = self.audited = 0  # answered: delivered

    def emit(self, decision: Decision) -> None:
        self.seen += 1
        self.deliver_due(decision.audio_end_s)
        audit = bool(getattr(decision, "audit", False))
        chance = self.audit_rate if audit else self.rate
        if chance <= 0 or self.rng.random() >= chance:
            return
        truth = true_label(self.timeline, decision, self.labels)
        if truth is None:
            return
        right = truth == decision.label
        self.confirmed += right
        self.corrected += not right
        self.audited += audit
        due = decision.audio_end_s + float(self.rng.uniform(*self.delay_s))
        heapq.heappush(self._due, (due, self.seen, Answer(decision.utterance, None if right else truth, audit)))

    def deliver_due(self, now_s: float) -> None:
        """Hand over every answer due at or before audio second ``now_s``."""
        while self._due and self._due[0][0] <= now_s:
            self.deliver_next()

    def deliver_next(self) -> None:
        """Hand over the answer that falls due first."""
        self.answer(heapq.heappop(self._due)[2])
        self.answered += 1

    @property
    def next_due_s(self) -> float | None:
        """Audio second at which the next answer falls due (None: nothing waiting)."""
        return self._due[0][0] if self._due else None

    @property
    def waiting(self) -> int:
        return len(self._due)

    def close(self) -> None:
        close = getattr(self.answer, "close", None)
        if close is not None:
            close()
