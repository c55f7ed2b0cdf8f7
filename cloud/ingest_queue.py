"""The messages between the MQTT network thread and the ingest writer, bounded.

One producer (paho's network thread, in ``on_message``) and one consumer (the writer). The
network thread is the collector's narrowest stage, since paho parses every packet in Python, so
``offer`` takes no lock and builds nothing but the ``InMessage``: a deque append, a length check, and counts
that each side alone advances (bytes in by the producer, bytes out by the consumer). It
wakes the writer only when the writer sleeps. The writer takes whole batches (``take``).

QoS 1 messages always get in (the broker sends at most ``receive_maximum`` of them
unacknowledged; a broker that ignores it is slowed down, not lost: ``offer`` blocks the
network thread while ``max_messages`` wait). A QoS 0 message gets in only while fewer than
``max_messages - reserved_qos1`` messages and ``max_bytes`` bytes wait; otherwise it is shed
and counted, since it can never come again.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

SPACE_POLL_S = 0.1  # a producer blocked on a full queue looks again at least this often


@dataclass(slots=True)
class InMessage:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int  # the connection it came on: an acknowledgement goes back on that one only
    received_t: float
    retain: bool = False


class IngestQueue:
    def __init__(self, max_messages: int, reserved_qos1: int, max_bytes: int):
        self.max_messages = max_messages
        self.qos0_max = max_messages - reserved_qos1
        self.max_bytes = max_bytes
        self._items: deque[InMessage] = deque()
        self._bytes_in = 0  # advanced by the producer only
        self._bytes_out = 0  # advanced by the consumer only
        self._consumer_waits = False
        self._ready = threading.Event()
        self._producer_waits = False
        self._space = threading.Event()
        self.peak = 0
        self.shed = 0
        self.shed_bytes = 0

    @property
    def bytes(self) -> int:
        return self._bytes_in - self._bytes_out

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    # -- the producer ------------------------------------------------------------------------------
    def offer(self, m: InMessage) -> bool:
        """Queue ``m``; False when it was shed (QoS 0 only)."""
        size = len(m.payload)
        items = self._items
        if m.qos == 0:
            if len(items) >= self.qos0_max or self.bytes + size > self.max_bytes:
                self.shed += 1
                self.shed_bytes += size
                return False
        elif len(items) >= self.max_messages:
            self._wait_for_space()
        self._bytes_in += size
        items.append(m)
        if len(items) > self.peak:
            self.peak = len(items)
        if self._consumer_waits:
            self._ready.set()
        return True

    def _wait_for_space(self) -> None:
        self._producer_waits = True
        try:
            while len(self._items) >= self.max_messages:
                self._space.clear()
                if len(self._items) >= self.max_messages:
                    self._space.wait(SPACE_POLL_S)
        finally:
            self._producer_waits = False

    # -- the consumer ------------------------------------------------------------------------------
    def take(self, max_n: int, timeout_s: float, fill_s: float) -> list[InMessage]:
        """Up to ``max_n`` messages: waits up to ``timeout_s`` for the first, then up to
        ``fill_s`` after it for more (nothing waits once ``max_n`` are there)."""
        if not self._wait(timeout_s):
            return []
        batch: list[InMessage] = []
        deadline = None
        while True:
            self._pop_into(batch, max_n)
            if len(batch) >= max_n:
                break
            now = time.monotonic()
            if deadline is None:
                deadline = now + fill_s
            if now >= deadline or not self._wait(deadline - now):
                break
        return batch

    def _pop_into(self, batch: list[InMessage], max_n: int) -> None:
        items, size = self._items, 0
        n = min(len(items), max_n - len(batch))
        for _ in range(n):
            m = items.popleft()
            size += len(m.payload)
            batch.append(m)
        self._bytes_out += size
        if self._producer_waits:
            self._space.set()

    def _wait(self, timeout_s: float) -> bool:
        """True once a message waits (at once if one does), False after ``timeout_s`` without."""
        if self._items:
            return True
        self._ready.clear()
        self._consumer_waits = True  # from here on the producer sets _ready
        try:
            return bool(self._items) or (self._ready.wait(timeout_s) and bool(self._items))
        finally:
            self._consumer_waits = False
