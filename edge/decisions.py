"""What the agent does with a prediction, by automation level, and where decisions go.

    human_only  nothing: no decision is emitted at all
    shadow      "log": recorded, nobody acts on it
    assist      "suggest" for a person to confirm; "no_answer" when below the threshold
    partial     "act" when confidence >= threshold, else "defer" to a person
    full        "act" always

Audit sample: ``AuditSampler`` flags a seeded-random share of decisions (``audit_rate``,
independent of confidence) with ``Decision.audit = True``: a request for a person to label
that utterance whatever the model said, so feedback is not only the corrections people
bother to make. The flag travels with the decision, so at ``human_only`` (no decision is
emitted) nothing is requested and the window's ``audit_requested`` stays 0; at every other
level the flagged decision reaches the sink whatever its action.

A sink is the one swappable part: ``DecisionSink.emit(decision)``. ``JsonLinesSink`` writes
one JSON object per line to a stream or file, ``CallbackSink`` hands it to a function,
``ListSink`` keeps it in memory (replay, tests).
"""
from __future__ import annotations

import abc
import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from typing import Callable, TextIO

from shared.errors import ConfigError
from shared.messages import AUTOMATION_LEVELS

ACTIONS = ("none", "log", "suggest", "act", "defer", "no_answer")
DEFAULT_AUDIT_RATE = 0.02


def check_level(level: str) -> str:
    if level not in AUTOMATION_LEVELS:
        raise ConfigError(f"automation level {level!r} is not one of {', '.join(AUTOMATION_LEVELS)}")
    return level


def action_for(level: str, no_answer: bool) -> str:
    """The action an automation level takes on a prediction (``no_answer``: below threshold)."""
    if level == "human_only":
        return "none"
    if level == "shadow":
        return "log"
    if level == "assist":
        return "no_answer" if no_answer else "suggest"
    if level == "partial":
        return "defer" if no_answer else "act"
    if level == "full":
        return "act"
    raise ConfigError(f"automation level {level!r} is not one of {', '.join(AUTOMATION_LEVELS)}")


@dataclass(frozen=True)
class Decision:
    """One decision on one utterance; ``utterance`` is ``{boot}-{n}``, unique per boot."""

    utterance: str
    audio_start_s: float
    audio_end_s: float
    label: str
    confidence: float
    action: str
    automation: str
    model: str
    shadow_label: str | None = None
    shadow_confidence: float | None = None
    t: float = 0.0  # wall clock when decided
    audit: bool = False  # flagged for a person to label (the audit sample)

    def to_dict(self) -> dict:
        return asdict(self)


class AuditSampler:
    """Flags a share ``rate`` of keys, pseudo-randomly but reproducibly from ``seed``.

    ``flag(key)`` hashes (seed, key), so the same utterance id always gets the same answer,
    whatever the chunking, the model or the order of calls; different seeds (devices) flag
    different utterances.
    """

    def __init__(self, rate: float = DEFAULT_AUDIT_RATE, seed: str | int = 0):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ConfigError(f"audit_rate must be a share in [0, 1], got {rate!r}; "
                              f"{DEFAULT_AUDIT_RATE} is the default")
        self.rate = float(rate)
        self.seed = seed
        self._key = hashlib.blake2b(str(seed).encode(), digest_size=16).digest()

    def uniform(self, key: str) -> float:
        """The draw in [0, 1) behind ``flag(key)``."""
        digest = hashlib.blake2b(key.encode(), digest_size=8, key=self._key).digest()
        return int.from_bytes(digest, "big") / 2.0 ** 64

    def flag(self, key: str) -> bool:
        return self.rate > 0.0 and self.uniform(key) < self.rate


class DecisionSink(abc.ABC):
    """Where decisions go. ``emit`` must be quick: it runs on the audio path."""

    @abc.abstractmethod
    def emit(self, decision: Decision) -> None:
        """Deliver one decision."""

    def close(self) -> None:
        """Release what the sink holds."""


class JsonLinesSink(DecisionSink):
    """One JSON object per line, flushed per decision, to a text stream or a file path (appended)."""

    def __init__(self, target: str | os.PathLike | TextIO):
        self.target = target
        self._owned = not hasattr(target, "write")
        self._stream: TextIO = open(target, "a", encoding="utf-8") if self._owned else target  # type: ignore[arg-type]
        self._lock = threading.Lock()

    def emit(self, decision: Decision) -> None:
        line = json.dumps(decision.to_dict(), sort_keys=True, separators=(",", ":")) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    def close(self) -> None:
        if self._owned:
            self._stream.close()


class CallbackSink(DecisionSink):
    """Hands each decision to ``fn`` (e.g. the agent's actuator, or an MQTT publisher)."""

    def __init__(self, fn: Callable[[Decision], None]):
        self.fn = fn

    def emit(self, decision: Decision) -> None:
        self.fn(decision)


class ListSink(DecisionSink):
    """Keeps every decision in ``decisions`` (replay and tests)."""

    def __init__(self):
        self.decisions: list[Decision] = []

    def emit(self, decision: Decision) -> None:
        self.decisions.append(decision)
