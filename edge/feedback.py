"""Human feedback on past predictions: a memory of recent predictions, and a JSON-lines reader.

A person confirms or corrects a decision some time after it was made. ``PredictionMemory``
keeps the last N predictions so late feedback still finds what the model said;
``FeedbackFile`` tails a file or FIFO of lines

    {"utterance": "3-17", "label": "yes"}      a correction (or confirmation) with the true label
    {"utterance": "3-17", "confirm": true}     the prediction was right

and hands each to the pipeline. Bad lines are counted, never fatal.
"""
from __future__ import annotations

import json
import logging
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, NamedTuple

log = logging.getLogger(__name__)

DEFAULT_MEMORY = 1000
MAX_LINE_BYTES = 4096


class Remembered(NamedTuple):
    label: str
    labels: tuple[str, ...]
    model: str  # sha256 of the model that made the prediction: feedback is credited to it
    audit: bool = False  # the decision was flagged for the audit sample


class PredictionMemory:
    """The last ``size`` predictions by utterance id (oldest forgotten first)."""

    def __init__(self, size: int = DEFAULT_MEMORY):
        self.size = size
        self._items: OrderedDict[str, Remembered] = OrderedDict()

    def update(self, utterance: str, label: str, labels: tuple[str, ...], model: str,
               audit: bool = False) -> "PredictionMemory":
        self._items[utterance] = Remembered(label, labels, model, bool(audit))
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return self

    def get(self, utterance: str) -> Remembered | None:
        return self._items.get(utterance)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class FeedbackItem:
    utterance: str
    label: str | None = None
    confirm: bool = False


def parse_line(line: str) -> FeedbackItem:
    """One feedback line → item; ValueError says what is wrong with it."""
    obj = json.loads(line)
    if not isinstance(obj, dict) or not isinstance(obj.get("utterance"), str):
        raise ValueError("a feedback line is an object with a string 'utterance'")
    label, confirm = obj.get("label"), obj.get("confirm", False)
    if label is not None and not isinstance(label, str):
        raise ValueError("'label' must be a string")
    if not isinstance(confirm, bool):
        raise ValueError("'confirm' must be true or false")
    if label is None and not confirm:
        raise ValueError("give either 'label' or 'confirm': true")
    return FeedbackItem(obj["utterance"], label, confirm)


class FeedbackFile:
    """Tail a JSON-lines file or FIFO of feedback, without blocking.

    ``read()`` returns the items in the complete lines written since the last call (a
    truncated file is read again from the start). ``pump(apply)`` calls
    ``apply(utterance, label, confirm) -> bool`` for each; ``follow(apply, stop)`` does
    that until the ``stop`` event is set. Counters: ``lines``, ``bad_lines``, ``applied``,
    ``rejected`` (unknown utterance or label, as ``apply`` reports).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.lines = self.bad_lines = self.applied = self.rejected = 0
        self._fd: int | None = None
        self._fifo = False
        self._pos = 0
        self._buf = b""

    def _open(self) -> bool:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            except FileNotFoundError:
                return False
            self._fifo = stat.S_ISFIFO(os.fstat(self._fd).st_mode)
            self._pos, self._buf = 0, b""
        if not self._fifo and os.fstat(self._fd).st_size < self._pos:  # truncated: start over
            os.lseek(self._fd, 0, os.SEEK_SET)
            self._pos, self._buf = 0, b""
        return True

    def _read_bytes(self) -> bytes:
        chunks = []
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:  # a FIFO with a writer but no data yet
                break
            if not data:
                break
            chunks.append(data)
            self._pos += len(data)
        return b"".join(chunks)

    def read(self) -> list[FeedbackItem]:
        if not self._open():
            return []
        self._buf += self._read_bytes()
        *lines, self._buf = self._buf.split(b"\n")
        if len(self._buf) > MAX_LINE_BYTES:  # a line that never ends: drop it
            self._buf = b""
            self.bad_lines += 1
        items = []
        for raw in lines:
            if not raw.strip():
                continue
            self.lines += 1
            try:
                items.append(parse_line(raw.decode("utf-8")))
            except (ValueError, UnicodeDecodeError) as exc:
                self.bad_lines += 1
                log.warning("feedback %s: ignoring a bad line (%s)", self.path, exc)
        return items

    def pump(self, apply: Callable[[str, str | None, bool], bool]) -> int:
        """Apply every new item; returns how many were accepted."""
        accepted = 0
        for item in self.read():
            if apply(item.utterance, item.label, item.confirm):
                accepted += 1
            else:
                self.rejected += 1
        self.applied += accepted
        return accepted

    def follow(self, apply: Callable[[str, str | None, bool], bool], stop: threading.Event,
               interval_s: float = 0.5) -> None:
        """Pump until ``stop`` is set (run it in a thread)."""
        while not stop.is_set():
            self.pump(apply)
            stop.wait(interval_s)
        self.pump(apply)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
