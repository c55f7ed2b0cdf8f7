"""The on-disk spool (bounded, durable) and its paced, acknowledged flusher."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from edge.flusher import SpoolFlusher
from edge.spool import ROW_OVERHEAD_BYTES, Spool
from shared.errors import StoreError


def test_fifo_ack_and_reopen(tmp_path):
    spool = Spool(tmp_path / "s.db", 1 << 20)
    ids = [spool.put("t/a", bytes([i]) * 10) for i in range(5)]
    assert [r.id for r in spool.peek(3)] == ids[:3]
    assert [r.payload for r in spool.peek(2, exclude={ids[0]})] == [b"\x01" * 10, b"\x02" * 10]
    assert [r.id for r in spool.peek(2, exclude={ids[0], ids[2], ids[3]})] == [ids[1], ids[4]]
    assert spool.peek(1, exclude=set(ids)) == [] and spool.peek(5, exclude={999}) == spool.peek(5)
    assert spool.ack(ids[1]) is True
    assert spool.ack(ids[1]) is False  # a second PUBACK for the same message changes nothing
    assert len(spool) == 4 and spool.bytes == 4 * (10 + 3 + ROW_OVERHEAD_BYTES)
    spool.close()
    again = Spool(tmp_path / "s.db", 1 << 20)
    assert [r.id for r in again.peek(10)] == [ids[0], *ids[2:]]
    assert again.bytes == 4 * (10 + 3 + ROW_OVERHEAD_BYTES)


def test_bound_drops_oldest_and_counts(tmp_path):
    row = 1000 + len("w") + ROW_OVERHEAD_BYTES
    spool = Spool(tmp_path / "s.db", 5 * row)
    ids = [spool.put("w", i.to_bytes(2, "big") * 500) for i in range(8)]
    assert len(spool) == 5 and spool.bytes <= 5 * row
    assert [r.id for r in spool.peek(10)] == ids[3:]  # the three oldest went
    assert spool.take_dropped() == 3
    assert spool.take_dropped() == 0  # reported once, in the next window
    spool.put("w", b"x" * 1000)
    spool.close()
    again = Spool(tmp_path / "s.db", 5 * row)
    assert again.dropped_total == 4 and again.take_dropped() == 1  # survives a restart
    with pytest.raises(StoreError, match="spool_max_bytes"):
        again.put("w", b"x" * (6 * row))


def test_kill_9_loses_nothing_committed(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.getcwd()!r})
        from edge.spool import Spool
        s = Spool({str(tmp_path / 's.db')!r}, 1 << 20)
        for i in range(200):
            s.put("t", b"%d" % i, meta={{"last_seq": i}})
        print("ok", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL and proc.stdout == "ok\n"
    spool = Spool(tmp_path / "s.db", 1 << 20)
    assert len(spool) == 200 and spool.meta("last_seq") == 199
    assert [r.payload for r in spool.peek(3)] == [b"0", b"1", b"2"]


class FakeBroker:
    """publish() records; ack(n) acknowledges the n oldest unacknowledged messages."""

    def __init__(self):
        self.sent: list[tuple[float, str, bytes]] = []
        self.waiting: list = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)

    def publish(self, topic, payload, *, on_ack=None):
        with self.cond:
            self.sent.append((time.monotonic(), topic, payload))
            self.waiting.append(on_ack)
            self.cond.notify_all()
        return len(self.sent)

    def wait_sent(self, n, timeout=10.0):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.sent) >= n, timeout), f"only {len(self.sent)} sent"

    def ack(self, n=None, ok=True):
        with self.cond:
            todo, self.waiting = (self.waiting, []) if n is None else (self.waiting[:n], self.waiting[n:])
        for cb in todo:
            cb(ok, "")


def test_flusher_paces_bounds_inflight_and_deletes_on_ack(tmp_path):
    spool = Spool(tmp_path / "s.db", 1 << 20)
    for i in range(30):
        spool.put("w", b"%d" % i)
    broker, connected = FakeBroker(), threading.Event()
    flusher = SpoolFlusher(spool, broker.publish, connected, rate_per_s=50, max_inflight=8,
                           rng=random.Random(1)).start()
    try:
        time.sleep(0.1)
        assert broker.sent == []  # nothing leaves while disconnected
        connected.set()
        flusher.on_connected()
        broker.wait_sent(8)
        time.sleep(0.15)
        assert len(broker.sent) == 8 and flusher.inflight == 8  # bounded until PUBACKs come
        broker.ack(8)
        assert len(spool) == 22
        for _ in range(30):
            broker.ack()
            if len(spool) == 0:
                break
            time.sleep(0.05)
        assert flusher.wait_drained(10)
        payloads = [p for _, _, p in broker.sent]
        assert payloads == [b"%d" % i for i in range(30)]  # in order, each once
        gaps = [b[0] - a[0] for a, b in zip(broker.sent[8:], broker.sent[9:])]
        assert min(gaps) >= 0.5 / 50 - 0.003  # paced: never faster than rate × 1.5 jitter
        span = broker.sent[-1][0] - broker.sent[0][0]
        assert span >= 29 * 0.5 / 50
    finally:
        flusher.stop()


def test_flusher_resends_after_ack_timeout_and_drops_refused(tmp_path):
    spool = Spool(tmp_path / "s.db", 1 << 20)
    spool.put("w", b"a")
    broker, connected = FakeBroker(), threading.Event()
    connected.set()
    flusher = SpoolFlusher(spool, broker.publish, connected, rate_per_s=100, max_inflight=4,
                           ack_timeout_s=0.3).start()
    try:
        broker.wait_sent(2, timeout=5)  # no PUBACK within 0.3 s: sent again
        assert [p for _, _, p in broker.sent[:2]] == [b"a", b"a"]
        broker.ack(ok=False)  # the broker refuses it (ACL): it would be refused forever, so it goes
        assert len(spool) == 0 and flusher.refused >= 1
    finally:
        flusher.stop()
