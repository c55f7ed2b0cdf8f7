"""The collector under a slow or silent PostgreSQL and a QoS 0 flood (real mosquitto, real PostgreSQL).

- a flood of QoS 0 windows while the writer is blocked on a table lock: what waits for the
  writer stays under its bound, the excess is shed and counted, and every QoS 1 window sent
  meanwhile is stored once the database moves again;
- a database that goes silent mid-transaction (a proxy that stops forwarding but keeps the
  sockets open): the connection is cut at the deadline, /readyz says why, and ingest goes on
  by itself once a new connection works;
- PostgreSQL connections carry TCP keepalives and a statement timeout.
"""
from __future__ import annotations

import json
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import paho.mqtt.client as mqtt
import psycopg
import pytest

from cloud.collector import Collector
from cloud.store import open_store
from shared.codec import encode
from tests.brokers import free_port
from tests.cloud.conftest import Publisher, collector_config, random_window, wait_until
from tests.cloud.tcp_proxy import StallingProxy

FLOOD = 20_000
QUEUE_MAX, RECEIVE_MAX = 3000, 1000


def _depth(ingest) -> int:
    """Messages waiting for the writer."""
    return ingest.queue.qsize()


def _count(db_url: str, device: str) -> int:
    with open_store(db_url) as s:
        with s.transaction(write=False) as cur:
            return cur.execute("SELECT COUNT(*) FROM windows WHERE device = ?", (device,)).fetchone()[0]


def test_a_qos0_flood_is_bounded_and_counted_while_qos1_windows_all_arrive(mosquitto, pg_schemas):
    db_url = pg_schemas()
    c = Collector(collector_config(mosquitto.url, db_url, ingest_queue_max=QUEUE_MAX, receive_maximum=RECEIVE_MAX,
                                   db_timeout_s=120))
    c.start()
    assert c.ingest.wait_connected(10)
    lock = psycopg.connect(db_url, autocommit=False)
    flooder = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flooder", protocol=mqtt.MQTTv5)
    pub = Publisher(mosquitto.port, client_id="steady")
    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], _depth(c.ingest))
            time.sleep(0.005)

    try:
        lock.execute("LOCK TABLE windows IN ACCESS EXCLUSIVE MODE")  # the writer's next INSERT waits
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        flooder.connect("127.0.0.1", mosquitto.port)
        flooder.loop_start()
        payload = encode(random_window(random.Random(0), "flood", 1, 0, t_start=time.time()))
        for i in range(FLOOD):
            flooder.publish(pub.topics.stats("flood"), payload, qos=0)
        now = time.time()
        steady = [random_window(random.Random(i), "steady", 1, i, t_start=now + i) for i in range(50)]
        for w in steady:
            pub.window(w, wait=False)
        q = c.ingest.queue
        # every message arrived: shed, waiting, or in the batches the blocked writer holds (the
        # child commits one while the next waits for it: WriterProcess.depth)
        held = c.config.batch_max * c.ingest._work.depth
        assert wait_until(lambda: q.shed + q.qsize() >= FLOOD + 50 - held, 60), (q.shed, q.qsize())
        sampling.set()
        sampler.join()
        shed_while_stalled = q.shed
        lock.rollback()  # the database moves again
        assert wait_until(lambda: _count(db_url, "steady") == 50, 60), _count(db_url, "steady")
        print(json.dumps({"qos0_flood": FLOOD, "queue_max": QUEUE_MAX, "receive_maximum": RECEIVE_MAX,
                          "peak_depth": peak[0], "shed": shed_while_stalled,
                          "shed_bytes": q.shed_bytes, "qos1_stored": 50}))
        assert peak[0] <= QUEUE_MAX, f"{peak[0]} messages waited for the writer (bound {QUEUE_MAX})"
        assert shed_while_stalled >= FLOOD - held - (QUEUE_MAX - RECEIVE_MAX)
        from cloud.api.backend import Backend, Services

        figures = Backend(Services(store=c.store, ingest=c.ingest)).ingest()  # what /metrics and the API show
        assert figures["shed_total"] == q.shed and figures["shed_bytes_total"] == q.shed_bytes
    finally:
        sampling.set()
        lock.close()
        flooder.disconnect()
        flooder.loop_stop()
        pub.close()
        c.stop()


def _readyz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _through(proxy: StallingProxy, db_url: str) -> str:
    parts = urlsplit(db_url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))


def test_a_silent_database_is_cut_reported_and_ingest_resumes(mosquitto, pg_schemas):
    db_url = pg_schemas()
    proxy = StallingProxy(urlsplit(db_url).port or 5432)
    http_port = free_port()
    c = Collector(collector_config(mosquitto.url, _through(proxy, db_url), db_timeout_s=2.0, http_port=http_port))
    pub = Publisher(mosquitto.port, client_id="dev-pub", clean=False)
    now = time.time()
    ws = [random_window(random.Random(i), "dev-1", 1, i, t_start=now + i) for i in range(3)]
    try:
        c.start()
        assert c.ingest.wait_connected(10)
        pub.window(ws[0])
        assert wait_until(lambda: _count(db_url, "dev-1") == 1, 10)
        assert wait_until(lambda: _readyz(http_port)[0] == 200, 10)
        proxy.stall()  # every connection through it goes silent; so do new ones
        pub.window(ws[1])
        assert wait_until(lambda: _readyz(http_port)[0] == 503, 40)
        status, body = _readyz(http_port)
        assert status == 503 and not body["ready"] and any("store" in r or "commit" in r for r in body["reasons"])
        proxy.resume()  # new connections work again; the stalled ones never will
        pub.window(ws[2])
        assert wait_until(lambda: _count(db_url, "dev-1") == 3, 40), _count(db_url, "dev-1")
        assert wait_until(lambda: _readyz(http_port)[0] == 200, 20)
        assert c.ingest.stats.store_failures >= 1
    finally:
        pub.close()
        c.stop()
        proxy.close()


def test_postgres_connections_carry_keepalives_and_a_statement_timeout(pg_schemas):
    store = open_store(pg_schemas(), timeout_s=7)
    try:
        with store.transaction(write=False) as cur:
            assert cur.execute("SHOW statement_timeout").fetchone()[0] == "7s"
        sock = socket.socket(fileno=__import__("os").dup(store._conn.pgconn.socket))
        try:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30000
        finally:
            sock.close()
    finally:
        store.close()


@pytest.mark.parametrize("qos, shed", [(0, True), (1, False)])
def test_the_queue_sheds_only_qos0_past_its_share(qos, shed):
    from cloud.ingest_queue import InMessage, IngestQueue

    q = IngestQueue(max_messages=10, reserved_qos1=4, max_bytes=1 << 20)
    for i in range(6):
        assert q.offer(InMessage("t", b"x", i, 0, 1, 0.0))
    assert q.offer(InMessage("t", b"x", 99, qos, 1, 0.0)) is not shed
    assert q.shed == (1 if shed else 0) and q.qsize() == (6 if shed else 7)
