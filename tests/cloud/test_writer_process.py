"""The collector's children (``cloud.child``): the ingest writer process and the rollup process.

They must give what the in-process code gives, and nothing may be lost when one dies: the
parent keeps a batch until the child answers, and acknowledges it to the broker only then.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import threading
import time

import pytest

from cloud.collector import Collector
from cloud.ingest_handler import IngestHandler
from cloud.ingest_receipts import PendingReceipts
from cloud.ingest_writer import MAX_CRASHES, Writer, WriterProcess
from cloud.rollup_process import RollupProcess
from cloud.store import open_store
from shared.codec import decode_raw, encode
from shared.errors import StoreError
from shared.topics import Topics
from tests.cloud.conftest import collector_config, random_window, state_message, wait_until

TOPICS = Topics()


def _mixed_batch(now: float) -> list[tuple[str, bytes, float, bool]]:
    """Windows (one twice), refused messages of several codes, an event and a state."""
    rng = random.Random(7)
    ws = [random_window(rng, f"dev-{i % 3}", 1, i, t_start=now + i) for i in range(12)]
    items = [(TOPICS.stats(w["device"]), encode(w), now, False) for w in ws]
    items.append(items[3])  # a duplicate
    items.append((TOPICS.stats("dev-1"), b"not json", now, False))
    items.append((TOPICS.stats("dev-2"), encode(ws[0]), now, False))  # device_mismatch, named in a receipt
    ev = {"kind": "event", "device": "dev-1", "boot": 1, "seq": 0, "t": now, "event": "feedback"}
    items.append((TOPICS.event("dev-1"), encode(ev), now, False))
    items.append((TOPICS.state("dev-0"), encode(state_message("dev-0", True, t=now)), now, True))
    return items


def _receipts(outcome) -> dict:
    out = {}
    pending = PendingReceipts(TOPICS)
    pending.add(outcome.named)
    for topic, payload in pending.take():
        body = decode_raw(payload)
        out[topic] = (body["windows"], body["events"])
    return out


def test_the_writer_process_gives_what_the_thread_gives(tmp_path):
    now = time.time()
    items = _mixed_batch(now)
    results = []
    for name in ("thread", "child"):
        url = f"sqlite:///{tmp_path / name}.db"
        handler = IngestHandler(TOPICS)
        if name == "thread":
            store = open_store(url)
            outcome = Writer(store, handler, stopping=lambda: False, on_failure=print).process(items)
            store.close()
        else:
            work = WriterProcess(url, None, handler, on_failure=print, local=None)
            work.start()
            try:
                outcome = work.process(items)
            finally:
                work.close()
            assert work.child.starts == 1
        store = open_store(url)
        stored = sorted((w["device"], w["seq"]) for w in store.windows())
        results.append((outcome.result, _receipts(outcome), outcome.windows, handler.accepted, handler.rejected,
                        stored, store.reject_counts()))
        store.close()
    assert results[0] == results[1]
    result, receipts, windows, accepted, rejected, stored, rejects = results[1]
    assert result.windows_new == 12 and windows == 13 and len(stored) == 12
    assert rejected == {"not_json": 1, "device_mismatch": 1} == rejects
    assert accepted == {"window": 13, "event": 1, "state": 1}
    assert [1, 0] in receipts[TOPICS.receipt("dev-2")][0]  # the refused copy of dev-0's window was named


def test_a_batch_that_kills_every_writer_process_is_written_by_the_parent(tmp_path):
    """A child that cannot even start (here: no database listens at its URL) dies on every batch; after
    MAX_CRASHES tries the parent writes the batch itself, so ingest never stops on one batch."""
    good = f"sqlite:///{tmp_path / 'good.db'}"
    store = open_store(good)
    handler = IngestHandler(TOPICS)
    work = WriterProcess("postgresql://nobody@127.0.0.1:1/none", 2.0, handler, on_failure=print,
                         local=lambda: Writer(store, handler, stopping=lambda: False, on_failure=print))
    work.start()
    now = time.time()
    ws = [random_window(random.Random(i), "dev-1", 1, i, t_start=now + i) for i in range(3)]
    try:
        outcome = work.process([(TOPICS.stats("dev-1"), encode(w), now, False) for w in ws])
    finally:
        work.close()
    assert work.child.starts == 1 + MAX_CRASHES
    assert outcome.result.windows_new == 3 and [w["seq"] for w in store.windows()] == [0, 1, 2]
    assert _receipts(outcome) == {TOPICS.receipt("dev-1"): ([[1, 0], [1, 1], [1, 2]], [])}
    store.close()


def test_a_writer_process_killed_with_two_batches_sent_answers_both_in_order(tmp_path):
    """The parent sends the next batch before it collects the last (``WriterProcess.depth``); a child that
    dies with both gets both again, and each is answered in the order sent. The batches are big
    enough that an answer fills a pipe's buffer, so a child that wrote it while the parent was still
    sending the next batch would block both for ever."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    handler = IngestHandler(TOPICS)
    work = WriterProcess(url, None, handler, on_failure=print, local=None)
    work.start()
    now, rng = time.time(), random.Random(3)
    batches = [[(TOPICS.stats(f"dev-{i}-with-a-long-name-to-fill-the-pipe"),
                 encode(random_window(rng, f"dev-{i}-with-a-long-name-to-fill-the-pipe", 1, 0, t_start=now)),
                 now, False) for i in range(b * 1500, (b + 1) * 1500)] for b in range(3)]
    try:
        assert work.process(batches[0]).result.windows_new == 1500  # the child is up
        first = work.pid
        work.submit(batches[1], "b1")
        work.submit(batches[2], "b2")
        os.kill(first, signal.SIGKILL)
        answers = [work.collect(), work.collect()]
    finally:
        work.close()
    assert work.child.starts == 2
    assert [token for token, _ in answers] == ["b1", "b2"]
    for (_, outcome), batch in zip(answers, batches[1:]):
        assert outcome.windows == 1500  # new, or a duplicate if the first child had committed it
        assert sorted(outcome.named) == sorted(t.split("/")[-2] for t, *_ in batch)
    store = open_store(url)
    assert len(list(store.windows())) == 4500
    store.close()


def test_a_killed_writer_process_loses_nothing(mosquitto, sqlite_url, publisher_factory):
    """The child is killed while it waits for the database with a batch: the parent starts another,
    sends the batch again, and acknowledges it only then. Every window is stored once and nothing is
    left unacknowledged in the broker."""
    path = sqlite_url[len("sqlite:///"):]
    open_store(sqlite_url).close()
    cfg = collector_config(mosquitto.url, sqlite_url, client_id="collector-kill")
    c = Collector(cfg)
    c.start()
    assert c.ingest.wait_connected(10)
    pub = publisher_factory()
    lock = sqlite3.connect(path, isolation_level=None)
    now = time.time()
    ws = [random_window(random.Random(i), "dev-1", 1, i, t_start=now + i) for i in range(30)]
    try:
        lock.execute("BEGIN EXCLUSIVE")  # the child's commit waits for the database
        for w in ws:
            pub.window(w)
        assert wait_until(lambda: c.ingest._commit_since is not None, 10)
        first = c.ingest._work.pid
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: c.ingest._work.pid not in (None, first), 10)
        lock.execute("ROLLBACK")
        assert wait_until(lambda: c.ingest.stats.messages == 30, 30), c.ingest.stats
        assert [w["seq"] for w in c.store.windows()] == list(range(30))
        assert c.ingest._work.child.starts == 2
        time.sleep(0.3)  # let the PUBACKs reach the broker
    finally:
        lock.close()
        c.stop()
    assert _redelivered(cfg) == 0  # everything was acknowledged


def test_stop_writes_what_was_queued_through_the_child(mosquitto, sqlite_url, publisher_factory):
    """Messages taken from the broker but still queued when stop() is called (the child waits for
    the database meanwhile) are committed and acknowledged before the collector goes: a restarted
    collector gets none of them again."""
    path = sqlite_url[len("sqlite:///"):]
    open_store(sqlite_url).close()
    cfg = collector_config(mosquitto.url, sqlite_url, client_id="collector-stop", batch_max=5)
    c = Collector(cfg)
    c.start()
    assert c.ingest.wait_connected(10)
    pub = publisher_factory()
    lock = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    now = time.time()
    try:
        lock.execute("BEGIN EXCLUSIVE")
        for i in range(40):
            pub.window(random_window(random.Random(i), "dev-1", 1, i, t_start=now + i))
        assert wait_until(lambda: c.ingest.queue.qsize() >= 30, 10)  # one batch is with the child, the rest wait
        taken = c.ingest.queue.qsize() + 5
        threading.Timer(1.0, lambda: lock.execute("ROLLBACK")).start()
        c.stop()
    finally:
        time.sleep(1.2)
        lock.close()
    # what arrived after stop() began was not taken, nor acknowledged: the broker sends it again
    assert c.ingest.stats.messages >= taken and c.ingest.queue.empty()
    assert _redelivered(cfg) == 40 - c.ingest.stats.messages
    store = open_store(sqlite_url)
    assert sorted(w["seq"] for w in store.windows()) == list(range(40))
    store.close()


def _redelivered(cfg) -> int:
    """Messages the broker still held for the collector's session (a new collector with its id
    gets and stores them)."""
    again = Collector(cfg)
    again.start()
    try:
        assert again.ingest.wait_connected(10)
        time.sleep(1.5)
        return again.ingest.stats.messages
    finally:
        again.stop()


def _buckets(url: str) -> list:
    store = open_store(url)
    with store._tx(write=False) as cur:
        rows = cur.execute("SELECT device, model, shadow_model, bucket_start, bucket_s, n_windows, body FROM rollups"
                           " ORDER BY device, model, shadow_model, bucket_start").fetchall()
    store.close()
    return [(*r[:6], json.loads(r[6])) for r in rows]


def test_the_rollup_process_rolls_up_what_the_store_does_and_survives_a_kill(tmp_path):
    now = time.time()
    rng = random.Random(3)
    ws = [random_window(rng, f"dev-{i % 4}", 1, i, t_start=now - 3000 + 20 * i, shadow=i % 5 == 0)
          for i in range(120)]
    urls = [f"sqlite:///{tmp_path / n}.db" for n in ("here", "child")]
    for url in urls:
        s = open_store(url)
        s.insert_windows(ws[:60], received_t=now)
        s.close()
    here = open_store(urls[0])
    child = RollupProcess(urls[1], None)
    try:
        assert here.rollup(300, 86400, now=now) == child.rollup(300, 86400, now=now)
        os.kill(child.pid, signal.SIGKILL)
        for url in urls:
            s = open_store(url)
            s.insert_windows(ws[60:], received_t=now)
            s.close()
        with pytest.raises(StoreError, match="rollup process died"):
            child.rollup(300, 86400, now=now)
        result = child.rollup(300, 86400, now=now)  # a new child
        assert result == here.rollup(300, 86400, now=now) and result.rolled == 60
        assert child.child.starts == 2
    finally:
        child.close()
        here.close()
    assert _buckets(urls[0]) == _buckets(urls[1]) and len(_buckets(urls[0])) > 8


def test_the_children_outlive_a_signal_to_the_group_and_end_with_the_parent(tmp_path):
    """SIGINT / SIGTERM to the process group must not kill a child mid-batch (the parent drains
    through it while it stops); a child ends when its pipe closes."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    work = WriterProcess(url, None, IngestHandler(TOPICS), on_failure=print, local=None)
    work.start()
    try:
        now = time.time()
        w = random_window(random.Random(1), "dev-1", 1, 0, t_start=now)
        assert work.process([(TOPICS.stats("dev-1"), encode(w), now, False)]).result.windows_new == 1
        for sig in (signal.SIGINT, signal.SIGTERM):
            os.kill(work.pid, sig)
        time.sleep(0.3)
        w = random_window(random.Random(2), "dev-1", 1, 1, t_start=now)
        assert work.process([(TOPICS.stats("dev-1"), encode(w), now, False)]).result.windows_new == 1
        assert work.child.starts == 1
        proc = work.child._proc
        work.child._to.close()  # as when the parent dies
        assert proc.wait(10) == 0
    finally:
        work.child.reap()


def test_a_too_late_window_counts_as_refused_not_as_a_duplicate(tmp_path):
    """``Outcome.windows`` (new plus duplicates: ``ingest_duplicates_total`` is it minus the new) leaves
    out a window the store refused as too late; that one is a reject, and still named in its receipt."""
    store = open_store(f"sqlite:///{tmp_path / 'late.db'}")
    now = time.time()
    ws = [random_window(random.Random(i), "dev-1", 1, i, t_start=now - 5000 + i) for i in range(3)]
    writer = Writer(store, IngestHandler(TOPICS), stopping=lambda: False, on_failure=print)
    raw = [(TOPICS.stats("dev-1"), encode(w), now - 4000, False) for w in ws]
    writer.process(raw[:2])
    assert store.rollup(300, 100.0, now=now).deleted == 2  # the floor of boot 1 is now seq 1
    outcome = writer.process([raw[0], raw[2], raw[2]])  # too late, new, and its duplicate
    assert outcome.result.windows_new == 1 and outcome.result.rejects == 1
    assert outcome.windows - outcome.result.windows_new == 1  # the duplicate only
    assert _receipts(outcome) == {TOPICS.receipt("dev-1"): ([[1, 0], [1, 2], [1, 2]], [])}
    store.close()
