"""Windows stay on the device until the collector's receipt, not just the broker's PUBACK.

Found by ``scripts/chaos.py``: mosquitto 2.0 restores a persisted session after a restart but
routes nothing to a shared subscription until its subscriber subscribes again, and a crash
loses what arrived since its last autosave. A device that deleted a window on the PUBACK lost
every window it sent between a broker restart and the collector's return (4 of 4 devices lost
windows in a 2-minute chaos run with graceful broker restarts only).
"""
from __future__ import annotations

import random
import sqlite3
import threading

from cloud.collector import Collector
from cloud.store import open_store
from edge.agent import Agent
from edge.flusher import SpoolFlusher
from edge.spool import Spool
from shared.audio import SAMPLE_RATE
from shared.receipts import ref
from tests.cloud.conftest import collector_config
from tests.edge.hardening import agent_config, until
from tests.edge.test_agent_integration import CHUNK, Running, ScriptedSource
from tests.edge.test_spool import FakeBroker


def _flusher(spool: Spool, broker: FakeBroker, **kwargs) -> SpoolFlusher:
    connected = threading.Event()
    connected.set()
    return SpoolFlusher(spool, broker.publish, connected, rate_per_s=1000, max_inflight=10,
                        rng=random.Random(0), **kwargs).start()


def test_a_window_stays_until_its_receipt_once_the_collector_sends_receipts(tmp_path):
    spool = Spool(tmp_path / "s.db", 1 << 20)
    spool.put("dev/stats", b"w0", ref=ref("stats", 7, 0))
    broker = FakeBroker()
    flusher = _flusher(spool, broker)
    try:
        broker.wait_sent(1)
        broker.ack()
        until(lambda: len(spool) == 0, 5, "the PUBACK to delete it: no receipt has come yet")
        flusher.confirm([ref("stats", 7, 0)])  # the first receipt (of a window already gone) switches receipts on
        assert flusher.receipts
        spool.put("dev/stats", b"w1", ref=ref("stats", 7, 1))
        spool.put("dev/state", b"no ref", ref=None)
        broker.wait_sent(3)
        broker.ack()
        until(lambda: flusher.awaiting == 1 and len(spool) == 1, 5, "the window to wait for its receipt")
        assert [r.payload for r in spool.peek(5)] == [b"w1"]  # the message without a ref went on its PUBACK
        assert flusher.confirm([ref("stats", 7, 1), ref("stats", 7, 99)]) == 1
        assert len(spool) == 0 and flusher.awaiting == 0
        assert len(broker.sent) == 3  # nothing was sent twice
    finally:
        flusher.stop()
    spool.close()
    assert Spool(tmp_path / "s.db", 1 << 20).meta("receipts") == 1  # remembered across restarts


def test_what_the_collector_never_confirmed_while_it_confirmed_later_goes_again(tmp_path):
    spool = Spool(tmp_path / "s.db", 1 << 20)
    spool.set_meta("receipts", 1)
    for seq in range(4):
        spool.put("dev/stats", b"w%d" % seq, ref=ref("stats", 7, seq))
    broker = FakeBroker()
    flusher = _flusher(spool, broker, resend_after_s=0.3)
    try:
        broker.wait_sent(4)
        broker.ack()  # the broker has all four, then loses w0 and w1
        until(lambda: flusher.awaiting == 4, 5, "all four to wait for receipts")
        flusher.confirm([ref("stats", 7, 2)])
        assert len(broker.sent) == 4  # not at once: a replica may still be committing w0 and w1
        broker.wait_sent(6, timeout=5)
        assert sorted(p for _, _, p in broker.sent[4:]) == [b"w0", b"w1"]  # sent before w2, never confirmed
        assert flusher.resent == 2
        broker.ack()
        flusher.confirm([ref("stats", 7, s) for s in (0, 1, 3)])
        assert len(spool) == 0 and flusher.wait_drained(1)
    finally:
        flusher.stop()


def test_a_spool_from_before_receipts_keeps_its_rows(tmp_path):
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript("CREATE TABLE spool (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
                      "payload BLOB NOT NULL, size INTEGER NOT NULL);"
                      "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                      "INSERT INTO spool (topic, payload, size) VALUES ('dev/stats', x'01', 74);")
    con.commit()
    con.close()
    spool = Spool(path, 1 << 20)
    assert [(r.payload, r.ref) for r in spool.peek(5)] == [(b"\x01", None)]
    spool.put("dev/stats", b"\x02", ref=ref("stats", 1, 5))
    assert spool.ids_of([ref("stats", 1, 5)]) == [spool.peek(5)[1].id]
    assert [r.payload for r in spool.peek(5, exclude={spool.peek(1)[0].id})] == [b"\x02"]  # its indexes were added


def _stored(db_url: str) -> list[int]:
    with open_store(db_url) as s, s.transaction(write=False) as cur:
        return sorted(r[0] for r in cur.execute("SELECT seq FROM windows WHERE device = ?", ("dev1",)).fetchall())


def test_windows_sent_before_the_collector_resubscribes_after_a_broker_restart_arrive(
        mosquitto, tmp_path, signing, release_signing, bundle_paths, speech):
    samples = speech[0]
    n_chunks = -(-len(samples) // CHUNK)
    first, second = n_chunks // 3, 2 * n_chunks // 3
    go_on, go_end = threading.Event(), threading.Event()
    source = ScriptedSource(samples, {first: go_on, second: go_end})
    db_url = f"sqlite:///{tmp_path / 'c.db'}"
    config = collector_config(mosquitto.url, db_url, client_id="receipts-collector")
    collector = Collector(config)
    collector.start()
    assert collector.ingest.wait_connected(10)
    run = Running(Agent(agent_config(mosquitto.port, tmp_path / "state", signing[2], release_key=release_signing[2],
                                     bundle=str(bundle_paths[0]), resend_unconfirmed_s=1.0),
                        source=source, drain_s=20))
    agent = run.agent
    assert source.reached[first].wait(30)
    until(lambda: agent.flusher.receipts and len(_stored(db_url)) >= 2, 30, "the first windows and receipts")

    collector.stop()  # the collector is away ...
    mosquitto.restart()  # ... while the broker restarts (cleanly: it saves every session and subscription)
    acked = agent.flusher.acked
    go_on.set()
    assert source.reached[second].wait(30)
    until(lambda: agent.pipeline.position_s >= second * CHUNK / SAMPLE_RATE and agent.flusher.acked >= acked + 2,
          30, "the broker to acknowledge windows that no collector subscription receives")
    assert agent.flusher.awaiting >= 2  # before receipts these were deleted here, and lost

    collector = Collector(config)  # the same client id: its session is present again
    collector.start()
    try:
        go_end.set()
        run.join(90)
        until(lambda: len(_stored(db_url)) >= agent.windows_out, 30, "every window in the store")
        assert _stored(db_url) == list(range(agent.windows_out))  # none lost, none twice
        assert agent.flusher.resent >= 2 and len(agent.spool) == 0
    finally:
        collector.stop()
