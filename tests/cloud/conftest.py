"""Fixtures for the collector tests: real stores (SQLite file, PostgreSQL schema), windows,
MQTT publishers and a running collector."""
from __future__ import annotations

import itertools
import os
import random
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shared.codec import encode
from shared.histogram import CONFIDENCE_EDGES, LATENCY_MS_EDGES, LEVEL_DBFS_EDGES, SNR_DB_EDGES, UTTERANCE_MS_EDGES
from shared.topics import Topics

PG_BASE = os.environ.get("HARKEN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MODEL_A = "a" * 64
MODEL_B = "b" * 64
LABELS = ("yes", "no", "up", "down", "stop", "go")
T0 = 1_700_000_000.0


def _hist(rng: random.Random, bins: int, total: int) -> list[int]:
    counts = [0] * bins
    for _ in range(total):
        counts[rng.randrange(bins)] += 1
    return counts


def random_window(rng: random.Random, device: str = "dev-1", boot: int = 1, seq: int = 0, *,
                  t_start: float | None = None, model: str | None = MODEL_A, n_features: int = 10,
                  shadow: bool = False, **extra) -> dict:
    """A schema-valid window with random counts. Floats are multiples of 1/64, so sums of
    them are exact and merged bodies compare equal whatever the order of addition."""
    n = rng.randrange(0, 12)
    labels = {}
    for _ in range(n):
        label = rng.choice(LABELS)
        labels[label] = labels.get(label, 0) + 1
    w = {
        "kind": "window", "v": "1.0", "device": device, "boot": boot, "seq": seq,
        "t_start": T0 + 10.0 * seq if t_start is None else t_start, "duration_s": 10.0,
        "audio_start_s": 10.0 * seq, "agent_version": "0.1.0", "model": model, "automation": "partial",
        "software": {"frames": 1000, "voiced_frames": rng.randrange(1000), "dropped_frames": rng.randrange(3),
                     "invalid_frames": 0, "utterances": n, "inferences": n, "errors": rng.randrange(2),
                     "cpu_s": rng.randrange(64) / 64, "rss_mb": 64 + rng.randrange(64) / 4,
                     "latency_ms": {"vad": _hist(rng, len(LATENCY_MS_EDGES) + 1, n),
                                    "model": _hist(rng, len(LATENCY_MS_EDGES) + 1, n)}},
        "input": {"utterance_ms": _hist(rng, len(UTTERANCE_MS_EDGES) + 1, n),
                  "level_dbfs": _hist(rng, len(LEVEL_DBFS_EDGES) + 1, n),
                  "snr_db": _hist(rng, len(SNR_DB_EDGES) + 1, n), "clipped_utterances": rng.randrange(2),
                  "features": [_hist(rng, 11, n) for _ in range(n_features)]},
        "output": {"labels": labels, "confidence": _hist(rng, len(CONFIDENCE_EDGES) + 1, n),
                   "no_answer": rng.randrange(2), "deferred": rng.randrange(2), "acted": n, "suggested": 0},
        "feedback": {"pairs": [[rng.choice(LABELS), rng.choice(LABELS), 1] for _ in range(rng.randrange(3))]},
    }
    if shadow:
        w["shadow_model"] = MODEL_B
        w["shadow"] = {"compared": n, "agree": rng.randrange(n + 1),
                       "confidence": _hist(rng, len(CONFIDENCE_EDGES) + 1, n), "labels": dict(labels)}
    w.update(extra)
    return w


def state_message(device: str, online: bool = True, t: float | None = None, **fields) -> dict:
    msg = {"kind": "state", "v": "1.0", "device": device, "online": online, "t": time.time() if t is None else t}
    msg.update(fields)
    return msg


# -- stores -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_schemas():
    """Creates one PostgreSQL schema per test on demand; drops them all at the end of the session."""
    session = uuid.uuid4().hex[:8]
    conn = psycopg.connect(PG_BASE, autocommit=True)
    made: list[str] = []
    counter = itertools.count()

    def make() -> str:
        name = f"harken_test_{session}_{next(counter)}"
        conn.execute(f"CREATE SCHEMA {name}")
        made.append(name)
        return f"{PG_BASE}?options=-csearch_path%3D{name}"

    yield make
    for name in made:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path, pg_schemas) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'harken.db'}"
    return pg_schemas()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'harken.db'}"


@pytest.fixture
def store(store_url):
    from cloud.store import open_store

    s = open_store(store_url)
    yield s
    s.close()


# -- MQTT -------------------------------------------------------------------------------------
class Publisher:
    """A device-side MQTT v5 client that publishes Harken messages at QoS 1 and waits for PUBACKs."""

    def __init__(self, port: int, client_id: str | None = None, *, clean: bool = True,
                 prefix: str = "harken/v1", will: tuple[str, bytes] | None = None, keepalive: int = 30):
        self.topics = Topics(prefix)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if clean else 3600
        self._connected = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()
        self.client.connect("127.0.0.1", port, keepalive=keepalive, clean_start=clean, properties=props)
        self.client.loop_start()
        assert self._connected.wait(10), "publisher could not connect"

    def publish_raw(self, topic: str, payload: bytes, retain: bool = False, wait: bool = True):
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if wait:
            info.wait_for_publish(10)
        return info

    def window(self, w: dict, wait: bool = True):
        return self.publish_raw(self.topics.stats(w["device"]), encode(w), wait=wait)

    def state(self, msg: dict):
        return self.publish_raw(self.topics.state(msg["device"]), encode(msg), retain=True)

    def event(self, msg: dict):
        return self.publish_raw(self.topics.event(msg["device"]), encode(msg))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher_factory(mosquitto):
    made: list[Publisher] = []

    def make(**kwargs) -> Publisher:
        p = Publisher(mosquitto.port, **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def collector_config(broker_url: str, db_url: str, **overrides):
    from cloud.config import load_collector_config

    values = {"broker_url": broker_url, "db_url": db_url, "client_id": f"collector-{uuid.uuid4().hex[:6]}",
              "batch_ms": 20.0, "rollup_interval_s": 3600.0, "keepalive_s": 5,
              # tests that want the HTTP API, drift or rollouts turn them on with a free port
              "http_port": 0, "drift_enabled": False, "rollouts_enabled": False}
    values.update(overrides)
    return load_collector_config(env={}, overrides=values)


def wait_until(predicate, timeout_s: float = 10.0, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    return predicate()
