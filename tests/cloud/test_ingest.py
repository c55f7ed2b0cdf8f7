"""Ingest: the handler on its own, then the collector against a real mosquitto and store."""
from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import zlib

import pytest

from cloud.collector import Collector
from cloud.ingest import IngestHandler, RejectLog
from cloud.store import Batch, Reject
from shared.codec import dumps, encode
from shared.topics import Topics
from tests.cloud.conftest import MODEL_A, T0, collector_config, random_window, state_message, wait_until

TOPICS = Topics()


def _handler(**kw) -> IngestHandler:
    return IngestHandler(TOPICS, **kw)


def _add(handler, topic, payload, t=T0 + 100):
    batch = Batch()
    code = handler.add(batch, topic, payload, t)
    return code, batch


# -- the handler, without a broker ----------------------------------------------------------------
def test_handler_accepts_each_kind_with_its_text():
    h = _handler()
    w = random_window(random.Random(1))
    code, batch = _add(h, TOPICS.stats("dev-1"), encode(w))
    assert code is None and batch.windows[0].message["seq"] == 0
    assert json.loads(batch.windows[0].body) == w  # the sender's own JSON text is what is stored
    assert batch.seen == {"dev-1": T0 + 100}
    code, batch = _add(h, TOPICS.state("dev-1"), encode(state_message("dev-1", False, t=1.0)))
    assert code is None and batch.states[0].message["online"] is False
    ev = {"kind": "event", "device": "dev-1", "boot": 1, "seq": 0, "t": 1.0, "event": "feedback"}
    assert _add(h, TOPICS.event("dev-1"), encode(ev))[0] is None
    assert h.accepted == {"window": 1, "state": 1, "event": 1}


@pytest.mark.parametrize("topic,payload,code", [
    ("harken/v1/dev/dev-1/stats", b"not json", "not_json"),
    ("harken/v1/dev/dev-1/stats", b"\x78\x9c garbage", "bad_zlib"),
    ("harken/v1/dev/dev-1/stats", zlib.compress(b"{" * 10)[:-3], "bad_zlib"),
    ("harken/v1/dev/dev-1/stats", zlib.compress(b" " * (300 * 1024)), "too_large"),
    ("harken/v1/dev/dev-1/stats", b"", "empty"),
    ("harken/v1/dev/dev-1/stats", b"[1, 2]", "not_object"),
    ("harken/v1/dev/dev-2/stats", encode(random_window(random.Random(1), "dev-1")), "device_mismatch"),
    ("harken/v1/dev/dev-1/stats", dumps({**random_window(random.Random(1)), "v": "2.0"}), "unsupported_major"),
    ("harken/v1/dev/dev-1/stats", encode(state_message("dev-1")), "wrong_kind"),
    ("harken/v1/dev/dev-1/stats", encode({**random_window(random.Random(1)), "seq": -1}), "bad_field"),
    ("harken/v1/dev/dev-1/stats", encode({**random_window(random.Random(1)), "seq": 2**64}), "bad_field"),
    ("harken/v1/dev/dev-1/stats", encode({**random_window(random.Random(1)), "model": "a\x00b"}), "bad_text"),
    ("harken/v1/dev/dev-1/stats", encode({**random_window(random.Random(1)), "model": "\ud800"}), "bad_text"),
    ("harken/v1/dev/dev-1/stats",
     json.dumps({**random_window(random.Random(1)), "extra": float("nan")}).encode(), "not_finite"),
    ("harken/v1/dev/dev-1/desired", b"{}", "unexpected_topic"),
    ("other/dev-1/stats", b"{}", "bad_topic"),
])
def test_handler_rejects_with_a_code(topic, payload, code):
    h = _handler()
    got, batch = _add(h, topic, payload)
    assert got == code
    assert not batch.windows and len(batch.rejects) == 1
    r = batch.rejects[0]
    assert (r.code, r.topic, r.size_bytes, r.head) == (code, topic, len(payload), payload[:256])
    assert h.rejected == {code: 1}


def test_a_refused_window_or_event_is_named_for_its_receipt_when_its_payload_says_which():
    h = _handler()
    bad = encode({"kind": "window", "device": "dev-1", "boot": 5, "seq": 1})  # a window without its sections
    assert _add(h, TOPICS.stats("dev-1"), bad)[1].rejects[0].ref == ("dev-1", "stats", 5, 1)
    event = encode({"kind": "event", "device": "dev-1", "boot": 5, "seq": 2, "t": 1.0})  # no "event"
    assert _add(h, TOPICS.event("dev-1"), event)[1].rejects[0].ref == ("dev-1", "event", 5, 2)
    # the topic's device is told (it sent it), not the one the payload claims
    assert _add(h, TOPICS.stats("dev-2"), bad)[1].rejects[0].ref == ("dev-2", "stats", 5, 1)
    for topic, payload in ((TOPICS.stats("dev-1"), b"not json"), ("other/dev-1/stats", bad),
                           (TOPICS.state("dev-1"), encode({"kind": "state", "boot": 5, "seq": 1}))):
        assert _add(h, topic, payload)[1].rejects[0].ref is None


def test_reject_log_warns_once_per_code_per_interval(caplog):
    clock = [0.0]
    log = RejectLog(60.0, clock=lambda: clock[0])
    r = Reject.of(0.0, "t", "not_json", "d", b"\x01\x02")
    with caplog.at_level(logging.WARNING, logger="cloud.ingest"):
        for _ in range(5):
            log.note(r)
        log.note(Reject.of(0.0, "t", "bad_zlib", "d", b""))
        clock[0] = 61.0
        log.note(r)
    messages = [rec.getMessage() for rec in caplog.records]
    assert len(messages) == 3
    assert messages[0].startswith("rejected 1 message(s) with code not_json") and "0102" in messages[0]
    assert messages[2].startswith("rejected 5 message(s) with code not_json")  # 4 held back + this one


# -- the collector against a real broker ----------------------------------------------------------
@pytest.fixture
def collector_factory(mosquitto, sqlite_url):
    started: list[Collector] = []

    def make(db_url: str = sqlite_url, **overrides) -> Collector:
        c = Collector(collector_config(mosquitto.url, db_url, **overrides))
        c.start()
        assert c.ingest.wait_connected(10)
        started.append(c)
        return c

    yield make
    for c in started:
        if c.ingest.connected.is_set() or c.ingest._writer.is_alive():
            c.stop()


def _count(store, **kw) -> int:
    return len(list(store.windows(**kw)))


def test_same_window_three_times_is_stored_once(collector_factory, publisher_factory):
    c = collector_factory()
    pub = publisher_factory()
    w = random_window(random.Random(1), t_start=time.time())
    for _ in range(3):
        pub.window(w)
    other = random_window(random.Random(2), seq=1, t_start=time.time())
    pub.window(other)
    assert wait_until(lambda: c.ingest.stats.messages == 4)
    assert _count(c.store) == 2 and c.ingest.stats.windows_new == 2


def test_windows_queued_while_the_collector_is_down_arrive_after_restart(
        mosquitto, sqlite_url, collector_factory, publisher_factory):
    cfg_id = "collector-restart"
    c = collector_factory(client_id=cfg_id)
    pub = publisher_factory()
    now = time.time()
    ws = [random_window(random.Random(i), "dev-1", 1, i, t_start=now + i) for i in range(30)]
    for w in ws[:10]:
        pub.window(w)
    assert wait_until(lambda: _count(c.store) == 10)
    c.stop()
    for w in ws[10:]:
        pub.window(w)  # the broker queues these for the collector's session
    c2 = collector_factory(client_id=cfg_id)
    assert wait_until(lambda: _count(c2.store) == 30)
    assert [w["seq"] for w in c2.store.windows()] == list(range(30))


def test_out_of_order_windows_are_stored_by_time(collector_factory, publisher_factory):
    c = collector_factory()
    pub = publisher_factory()
    now = time.time()
    ws = [random_window(random.Random(i), "dev-1", 1, i, t_start=now + 10 * i) for i in range(8)]
    for i in (5, 3, 7, 0, 6, 1, 4, 2):
        pub.window(ws[i])
    assert wait_until(lambda: _count(c.store) == 8)
    assert [w["seq"] for w in c.store.windows()] == list(range(8))


def test_garbage_is_rejected_counted_and_ingest_goes_on(collector_factory, publisher_factory):
    c = collector_factory()
    pub = publisher_factory()
    now = time.time()
    good = [random_window(random.Random(i), "dev-1", 1, i, t_start=now + i) for i in range(3)]
    pub.window(good[0])
    pub.publish_raw(TOPICS.stats("dev-1"), b"\x00\xffnot json at all")
    pub.publish_raw(TOPICS.stats("dev-1"), zlib.compress(b'{"kind": "window"')[:-4])
    pub.window(good[1])
    pub.publish_raw(TOPICS.stats("dev-9"), encode(random_window(random.Random(9), "dev-1", 1, 99, t_start=now)))
    pub.publish_raw(TOPICS.stats("dev-1"), dumps({**random_window(random.Random(8), t_start=now), "v": "7.1"}))
    pub.window(good[2])
    assert wait_until(lambda: c.ingest.stats.messages == 7)
    assert [w["seq"] for w in c.store.windows()] == [0, 1, 2]
    assert c.store.reject_counts() == {"not_json": 1, "bad_zlib": 1, "device_mismatch": 1,
                                       "unsupported_major": 1}
    latest = c.store.rejected()
    assert latest[-1]["head_hex"] == b"\x00\xffnot json at all".hex()
    assert latest[-1]["topic"] == TOPICS.stats("dev-1")


def test_rejected_messages_are_acknowledged(mosquitto, collector_factory, publisher_factory):
    c = collector_factory(client_id="collector-acks")
    pub = publisher_factory()
    pub.publish_raw(TOPICS.stats("dev-1"), b"garbage")
    pub.window(random_window(random.Random(1), t_start=time.time()))
    assert wait_until(lambda: c.ingest.stats.messages == 2)
    time.sleep(0.3)  # let the PUBACKs reach the broker
    c.stop()
    c2 = collector_factory(client_id="collector-acks")
    time.sleep(1.0)
    assert c2.ingest.stats.messages == 0  # nothing was redelivered
    assert c2.store.reject_counts() == {"not_json": 1}


def _device_process(port: int, device: str, keepalive: int) -> subprocess.Popen:
    """A device in another process: retained online state, last will offline, then idle."""
    code = f"""
import sys, time
import paho.mqtt.client as mqtt
from shared.codec import encode
from shared.topics import Topics
t = Topics()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id={device!r}, protocol=mqtt.MQTTv5)
c.will_set(t.state({device!r}), encode({{"kind": "state", "device": {device!r}, "online": False, "t": time.time()}}),
           qos=1, retain=True)
c.connect("127.0.0.1", {port}, keepalive={keepalive})
c.loop_start()
c.publish(t.state({device!r}), encode({{"kind": "state", "device": {device!r}, "online": True, "t": time.time(),
          "agent_version": "0.1.0", "automation": "shadow", "health": "ok",
          "models": {{"active": {MODEL_A!r}, "previous": None}}}}), qos=1, retain=True).wait_for_publish(5)
print("up", flush=True)
time.sleep(600)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=os.getcwd())
    assert proc.stdout.readline().strip() == b"up"
    return proc


def test_online_from_retained_state_offline_from_last_will(mosquitto, collector_factory):
    device = _device_process(mosquitto.port, "dev-live", keepalive=1)
    try:
        c = collector_factory()
        # retained state: the collector learns it on subscribe, even though it came up later
        assert wait_until(lambda: (c.store.device("dev-live") or {}).get("online") is True, 10)
        assert c.store.device("dev-live")["state"]["agent_version"] == "0.1.0"
        # the device hangs (no packets, socket open): the broker's keepalive fires the last will
        device.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        assert wait_until(lambda: c.store.device("dev-live")["online"] is False, 15)
        assert time.monotonic() - t0 < 8.0  # 1.5 x keepalive, plus slack for a loaded test machine
        d = c.store.device("dev-live")
        assert d["state"]["models"]["active"] == MODEL_A  # the will keeps what the device ran
    finally:
        device.kill()
        device.wait()


def test_state_seen_by_a_collector_started_later(mosquitto, collector_factory, publisher_factory):
    pub = publisher_factory()
    pub.state(state_message("dev-a", True, agent_version="0.3.0"))
    pub.state(state_message("dev-b", False, t=1000.0))
    c = collector_factory()
    assert wait_until(lambda: len(c.store.devices()) == 2)
    assert {d["device"]: d["online"] for d in c.store.devices()} == {"dev-a": True, "dev-b": False}
    # a replayed retained state is not a sign of life: last seen is the state's own time
    assert c.store.device("dev-b")["last_seen_t"] == 1000.0


def test_a_store_outage_delays_but_loses_nothing(mosquitto, pg_schemas, collector_factory, publisher_factory):
    """PostgreSQL refuses writes for a while (schema renamed away): batches are retried,
    nothing is acknowledged before it is committed, and everything lands afterwards."""
    import psycopg

    url = pg_schemas()
    schema = url.rsplit("%3D", 1)[1]
    c = collector_factory(db_url=url)
    pub = publisher_factory()
    now = time.time()
    ws = [random_window(random.Random(i), "dev-1", 1, i, t_start=now + i) for i in range(20)]
    for w in ws[:5]:
        pub.window(w)
    assert wait_until(lambda: _count(c.store) == 5)
    with psycopg.connect(url.split("?")[0], autocommit=True) as admin:
        admin.execute(f"ALTER SCHEMA {schema} RENAME TO {schema}_away")
        for w in ws[5:]:
            pub.window(w)
        assert wait_until(lambda: c.ingest.stats.store_failures >= 2, 10)
        admin.execute(f"ALTER SCHEMA {schema}_away RENAME TO {schema}")
    assert wait_until(lambda: c.ingest.stats.windows_new == 20, 20)
    assert [w["seq"] for w in c.store.windows()] == list(range(20))
