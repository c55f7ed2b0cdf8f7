"""FleetPacer: on schedule at the speed, no catch-up burst, never far ahead of the consumer."""
from __future__ import annotations

import numpy as np

from edge.sim.pacing import FleetPacer
from edge.sources import AudioSource

SR = 16000


class Chunks(AudioSource):
    def __init__(self, n: int, samples: int = SR):
        self.n, self.samples = n, samples

    def chunks(self):
        for _ in range(self.n):
            yield np.zeros(self.samples, dtype=np.float32)


class FakeTime:
    def __init__(self):
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def release_times(pacer: FleetPacer, t: FakeTime, work_s=lambda i: 0.0) -> list[float]:
    out = []
    for i, _ in enumerate(pacer.chunks()):
        out.append(round(t.now - 100.0, 6))
        t.now += work_s(i)  # the consumer's time spent on chunk i
    return out


def test_releases_one_chunk_per_chunk_duration_over_speed():
    t = FakeTime()
    pacer = FleetPacer(Chunks(5), 4.0, clock=t.clock, sleep=t.sleep)
    assert release_times(pacer, t) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert pacer.produced_s == 5.0


def test_a_device_that_fell_behind_catches_up_by_at_most_the_debt_limit():
    t = FakeTime()
    pacer = FleetPacer(Chunks(8), 1.0, max_debt_s=1.0, clock=t.clock, sleep=t.sleep)
    # chunk 1 keeps the machine busy for 5 s: a fixed schedule would release 4 chunks at once after it
    times = release_times(pacer, t, work_s=lambda i: 5.0 if i == 1 else 0.0)
    assert times[:2] == [0.0, 1.0]
    after = times[2:]
    assert after[0] == 6.0
    bursts = sum(1 for a, b in zip(after, after[1:]) if b - a < 1e-9)
    assert bursts <= 1  # one chunk of debt (1 s) is made up at once, no more
    assert after[-1] - after[0] >= 4.0  # the rest comes at real time


def test_never_more_than_max_ahead_of_the_consumer():
    t = FakeTime()
    consumed = {"s": 0.0}

    def consumer_sleep(s):  # the consumer advances 0.1 audio s per poll: a slow pipeline
        t.sleep(s)
        consumed["s"] += 0.1

    pacer = FleetPacer(Chunks(10), 100.0, consumed_s=lambda: consumed["s"], max_ahead_s=2.0,
                       clock=t.clock, sleep=consumer_sleep)
    for _ in pacer.chunks():
        assert pacer.produced_s - consumed["s"] <= 3.0  # at most max_ahead plus the chunk just released
    assert pacer.waited_for_consumer_s > 0


def test_close_ends_the_stream_even_while_waiting_for_the_consumer():
    pacer = FleetPacer(Chunks(100), 1000.0, consumed_s=lambda: 0.0, max_ahead_s=1.0)
    got = []
    for chunk in pacer.chunks():
        got.append(chunk)
        if len(got) == 2:
            pacer.close()
    assert len(got) == 2
