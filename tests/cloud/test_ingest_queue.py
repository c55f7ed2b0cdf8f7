"""The queue between paho's network thread and the ingest writer (``cloud.ingest_queue``)."""
from __future__ import annotations

import threading
import time

from cloud.ingest_queue import IngestQueue, InMessage


def msg(i: int, qos: int = 1, size: int = 10) -> InMessage:
    return InMessage("t", b"x" * size, i, qos, 1, 0.0)


def test_take_returns_whole_batches_in_order_and_keeps_the_byte_count():
    q = IngestQueue(max_messages=100, reserved_qos1=10, max_bytes=1 << 20)
    for i in range(25):
        assert q.offer(msg(i))
    assert q.bytes == 250 and q.peak == 25
    first = q.take(10, timeout_s=1.0, fill_s=1.0)  # ten are there: no waiting
    assert [m.mid for m in first] == list(range(10))
    rest = q.take(100, timeout_s=1.0, fill_s=0.0)  # takes what is there, does not wait to fill
    assert [m.mid for m in rest] == list(range(10, 25))
    assert q.bytes == 0 and q.empty()
    t0 = time.monotonic()
    assert q.take(10, timeout_s=0.05, fill_s=1.0) == []
    assert time.monotonic() - t0 < 0.5


def test_a_waiting_writer_wakes_as_soon_as_a_message_comes_and_waits_fill_s_for_more():
    q = IngestQueue(max_messages=100, reserved_qos1=10, max_bytes=1 << 20)
    got: list = []
    writer = threading.Thread(target=lambda: got.append(q.take(3, timeout_s=10.0, fill_s=10.0)))
    writer.start()
    for i in range(3):
        time.sleep(0.02)  # the writer is asleep each time: every offer has to wake it
        q.offer(msg(i))
    writer.join(5.0)
    assert not writer.is_alive() and [m.mid for m in got[0]] == [0, 1, 2]


def test_qos0_is_shed_past_its_share_of_messages_or_bytes():
    q = IngestQueue(max_messages=10, reserved_qos1=4, max_bytes=100)
    for i in range(6):
        assert q.offer(msg(i, qos=0))
    assert not q.offer(msg(6, qos=0)) and q.shed == 1 and q.shed_bytes == 10
    assert q.offer(msg(7, qos=1))  # QoS 1 still has its reserve
    q.take(10, 0.1, 0.0)
    assert q.offer(msg(8, qos=0, size=90)) and not q.offer(msg(9, qos=0, size=20))  # 110 bytes > 100
    assert q.shed == 2 and q.shed_bytes == 30


def test_a_full_queue_blocks_qos1_until_the_writer_takes_some():
    q = IngestQueue(max_messages=5, reserved_qos1=2, max_bytes=1 << 20)
    for i in range(5):
        q.offer(msg(i))
    producer = threading.Thread(target=q.offer, args=(msg(5),))
    producer.start()
    producer.join(0.3)
    assert producer.is_alive() and q.qsize() == 5  # held, not dropped
    assert len(q.take(2, 1.0, 0.0)) == 2
    producer.join(5.0)
    assert not producer.is_alive() and q.qsize() == 4
    assert [m.mid for m in q.take(10, 1.0, 0.0)] == [2, 3, 4, 5]
