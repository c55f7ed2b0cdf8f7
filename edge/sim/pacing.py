"""Pacing many simulated microphones on a few cores.

The agent's ``RealtimePacer`` keeps a file source on a fixed schedule from its first chunk:
right for one device, wrong for hundreds sharing two cores. When the machine is busy their
pipelines fall behind; a fixed schedule then keeps producing audio into each agent's read
queue (up to 64 chunks per agent: hundreds of MB for a fleet) and later releases it all at
once, a catch-up burst that starves everything else. ``FleetPacer`` avoids both:

- a chunk is released no sooner than ``speed`` times real time after the previous one,
  and a device that fell behind catches up by at most ``max_debt_s`` of wall time;
- it never runs more than ``max_ahead_s`` of audio ahead of what the consumer (the agent's
  pipeline) has taken, so the read queue stays short.

Audio time simply runs slower while the machine is saturated; windows are cut on audio
time, so their statistics do not change.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

import numpy as np

from edge.sources import AudioSource
from shared.errors import ConfigError

POLL_S = 0.05


class FleetPacer(AudioSource):
    def __init__(self, source: AudioSource, speed: float, *, consumed_s: Callable[[], float] | None = None,
                 max_ahead_s: float = 2.0, max_debt_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None):
        if speed <= 0:
            raise ConfigError(f"speed must be positive (1.0 = real time), got {speed!r}")
        self.source, self.speed = source, float(speed)
        self.consumed_s, self.max_ahead_s, self.max_debt_s = consumed_s, max_ahead_s, max_debt_s
        self.name = source.name
        self._clock = clock
        self._closed = threading.Event()
        self._sleep = sleep or (lambda s: self._closed.wait(s))
        self.produced_s = 0.0
        self.waited_for_consumer_s = 0.0

    def chunks(self) -> Iterator[np.ndarray]:
        due = self._clock()
        for chunk in self.source.chunks():
            self._wait_for_consumer()
            now = self._clock()
            if due > now:
                self._sleep(due - now)
            else:
                due = max(due, now - self.max_debt_s)  # behind: catch up a little, never in one burst
            if self._closed.is_set():
                return
            seconds = len(chunk) / self.source.sample_rate
            due += seconds / self.speed
            self.produced_s += seconds
            yield chunk

    def _wait_for_consumer(self) -> None:
        if self.consumed_s is None:
            return
        t0 = self._clock()
        while not self._closed.is_set() and self.produced_s - self.consumed_s() > self.max_ahead_s:
            self._sleep(POLL_S)
        self.waited_for_consumer_s += self._clock() - t0

    def close(self) -> None:
        self._closed.set()
        self.source.close()
