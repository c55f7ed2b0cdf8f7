#!/usr/bin/env python
"""Collector benchmark; prints JSON. Runs a private mosquitto on a free loopback port.

    throughput  windows/s drained from the broker by the collector (decode, validate, commit
                to SQLite, acknowledge) vs a bare paho subscriber (auto-ack, no work) on the
                same broker and the same queued windows, in the same run. Target >= 0.7x.
    lag         1,000 simulated devices each sending one 10 s window (real codec, compressed)
                every 10 s for --lag-s seconds; publish -> committed lag. Target p99 <= 1 s.
    horizon     24 h of windows from 1,000 devices rolled up, plus the full windows of one
                maintenance interval; the merges a drift report reads. Target <= 1 s.

    python scripts/bench_collector.py [--n 20000] [--lag-s 40] [--devices 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from cloud.collector import Collector  # noqa: E402
from cloud.config import load_collector_config  # noqa: E402
from cloud.store import Batch, Received, open_store  # noqa: E402
from shared.codec import encode  # noqa: E402
from shared.topics import Topics  # noqa: E402
from tests.brokers import Mosquitto  # noqa: E402
from tests.cloud.conftest import random_window  # noqa: E402

TOPICS = Topics()
RECEIVE_MAXIMUM = 2000


def _props(session_s: int = 3600) -> Properties:
    p = Properties(PacketTypes.CONNECT)
    p.SessionExpiryInterval = session_s
    p.ReceiveMaximum = RECEIVE_MAXIMUM
    return p


def _publish(port: int, items: list[tuple[str, bytes]]) -> float:
    """Publish at QoS 1 and wait for every PUBACK; returns the rate."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.perf_counter()
    infos = [c.publish(t, p, qos=1) for t, p in items]
    for i in infos:
        i.wait_for_publish(120)
    rate = len(items) / (time.perf_counter() - t0)
    c.disconnect()
    c.loop_stop()
    return rate


def _windows(n: int, devices: int, rng: random.Random) -> list[tuple[str, bytes]]:
    now = time.time()
    return [(TOPICS.stats(f"dev-{i % devices:04d}"),
             encode(random_window(rng, f"dev-{i % devices:04d}", 1, i // devices, t_start=now + i // devices)))
            for i in range(n)]


def bare_subscriber(port: int, items: list[tuple[str, bytes]]) -> float:
    got, done = [0], threading.Event()

    def on_message(client, userdata, msg):
        got[0] += 1
        if got[0] == len(items):
            done.set()

    def client() -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=mqtt.MQTTv5)
        c.on_message = on_message
        return c

    c = client()
    c.connect("127.0.0.1", port, clean_start=True, properties=_props())
    c.loop_start()
    c.subscribe(TOPICS.shared_filter("bare", "stats"), qos=1)
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()
    _publish(port, items)  # queued for the bare subscriber's session
    c = client()
    t0 = time.perf_counter()
    c.connect("127.0.0.1", port, clean_start=False, properties=_props())
    c.loop_start()
    if not done.wait(300):
        raise RuntimeError(f"bare subscriber got {got[0]} of {len(items)}")
    rate = len(items) / (time.perf_counter() - t0)
    c.disconnect()
    c.loop_stop()
    return rate


def _config(broker: Mosquitto, db_url: str, client_id: str, **kw):
    return load_collector_config(env={}, overrides={"broker_url": broker.url, "db_url": db_url,
                                                    "client_id": client_id, "group": client_id, **kw})


def collector_drain(broker: Mosquitto, items: list[tuple[str, bytes]], db_url: str) -> dict:
    """The drain with rollups deferred (as they are under a backlog); the rollup pass over the
    drained windows is timed after it, so both costs are reported."""
    cfg = _config(broker, db_url, "bench-collector", receive_maximum=RECEIVE_MAXIMUM, rollup_interval_s=3600.0)
    first = Collector(cfg)
    first.start()
    first.ingest.wait_connected(10)
    first.stop()
    _publish(broker.port, items)
    c = Collector(cfg)
    t0 = time.perf_counter()
    c.start()
    deadline = time.monotonic() + 600
    while c.ingest.stats.windows_new < len(items) and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    stats = c.ingest.stats
    c.stop()
    with open_store(db_url) as store:
        t_roll = time.perf_counter()
        rolled = store.rollup(cfg.rollup_bucket_s, cfg.retention_full_s).rolled
        roll_s = time.perf_counter() - t_roll
    ingest_rate, rollup_rate = stats.windows_new / elapsed, rolled / roll_s
    return {"windows_per_s": round(ingest_rate, 1), "windows": stats.windows_new,
            "batches": stats.batches, "mean_batch": round(stats.messages / max(stats.batches, 1), 1),
            "rollup_windows_per_s": round(rollup_rate, 1),
            "sustained_with_rollup_windows_per_s": round(1 / (1 / ingest_rate + 1 / rollup_rate), 1)}


def lag(broker: Mosquitto, db_url: str, devices: int, seconds: float, rng: random.Random) -> dict:
    lags: list[float] = []

    def on_commit(items, result, commit_t):
        for m in items:
            if m.topic.endswith("/stats"):
                lags.append(commit_t - json.loads(zlib.decompress(m.payload))["sent_t"])

    c = Collector(_config(broker, db_url, "bench-lag"), on_commit=on_commit)
    c.start()
    c.ingest.wait_connected(10)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-fleet", protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    period_s, t0, sent, seq = 10.0, time.time(), 0, 0
    while time.time() - t0 < seconds:
        due = int((time.time() - t0) / period_s * devices)  # devices spread evenly over the period
        while sent < due:
            d = sent % devices
            w = random_window(rng, f"dev-{d:04d}", 1, sent // devices, t_start=time.time(), sent_t=time.time())
            pub.publish(TOPICS.stats(w["device"]), encode(w), qos=1)
            sent += 1
        time.sleep(0.005)
    deadline = time.monotonic() + 30
    while len(lags) < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    c.stop()
    pub.disconnect()
    pub.loop_stop()
    lags.sort()
    q = statistics.quantiles(lags, n=100)
    return {"devices": devices, "window_s": period_s, "seconds": seconds, "windows": len(lags),
            "rollup_passes_included": True, "lag_p50_s": round(q[49], 4), "lag_p99_s": round(q[98], 4),
            "lag_max_s": round(lags[-1], 4)}


def horizon(db_url: str, devices: int, rng: random.Random) -> dict:
    """24 h of windows (one per device per 15 min; full 10 s windows would be 8.6 M) rolled up,
    then the full windows of one rollup interval (default 5 s of 10 s windows) left unrolled,
    as the queries find them between two maintenance passes."""
    cfg = load_collector_config(env={}, overrides={"db_url": db_url})
    tail = max(1, int(devices * cfg.rollup_interval_s / 10.0))
    store = open_store(db_url)
    now = time.time()
    start = now - 86400
    t_fill = time.perf_counter()
    for k in range(96):
        ws = [random_window(rng, f"dev-{d:04d}", 1, k, t_start=start + 900 * k + rng.random() * 800,
                            duration_s=900.0) for d in range(devices)]
        store.write(Batch(windows=[Received(w, now) for w in ws]))
    fill_s = time.perf_counter() - t_fill
    t_roll = time.perf_counter()
    rolled = store.rollup(cfg.rollup_bucket_s, 3600.0, now=now)
    rollup_s = time.perf_counter() - t_roll
    store.write(Batch(windows=[Received(random_window(rng, f"dev-{d:04d}", 1, 1000, t_start=now - 5), now)
                               for d in range(tail)]))
    store.tag("dev-0000", ["x"])
    tagged = [f"dev-{d:04d}" for d in range(0, devices, max(1, devices // 100))]
    for d in tagged:
        store.tag(d, ["hundred"])

    def timed(fn, repeat: int = 3) -> tuple[float, object]:
        best, out = float("inf"), None
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        return round(best, 4), out

    since = now - 86400
    b = cfg.rollup_bucket_s
    fleet_s, fleet = timed(lambda: store.merged(since=since, until=now + 1, bucket_s=b))
    tag_s, _ = timed(lambda: store.merged(devices=store.devices_with_tag("hundred"), since=since, until=now + 1,
                                          bucket_s=b))
    dev_s, _ = timed(lambda: store.merged(devices=["dev-0007"], since=since, until=now + 1, bucket_s=b))
    buckets_s, n_parts = timed(lambda: sum(1 for _ in store.device_buckets(since=since, until=now + 1, bucket_s=b)),
                               repeat=1)
    n_windows = sum(m["n_windows"] for m in fleet.values())
    store.close()
    return {"devices": devices, "hours": 24, "windows_in_horizon": n_windows, "unrolled_tail": tail,
            "bucket_s": cfg.rollup_bucket_s, "device_windows_per_day": 96, "fill_s": round(fill_s, 1),
            "rollup_pass_s": round(rollup_s, 1), "rolled": rolled.rolled,
            "fleet_merge_s": fleet_s, "tag_100_devices_merge_s": tag_s, "one_device_merge_s": dev_s,
            "per_device_buckets_s": buckets_s, "per_device_bucket_rows": n_parts}


def machine() -> dict:
    import paho.mqtt

    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(), "paho_mqtt": paho.mqtt.__version__, "sqlite": sqlite3.sqlite_version,
            "mosquitto": mosq}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="windows in the throughput runs")
    ap.add_argument("--lag-s", type=float, default=40.0, help="seconds of simulated fleet traffic")
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: throughput,lag,horizon")
    args = ap.parse_args()
    rng = random.Random(0)
    skip = set(filter(None, args.skip.split(",")))
    out: dict = {"machine": machine(), "drift": "not wired into the collector yet: not measured"}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "mosquitto").start()
        try:
            if "throughput" not in skip:
                items = _windows(args.n, args.devices, rng)
                bare = bare_subscriber(broker.port, items)
                coll = collector_drain(broker, items, f"sqlite:///{tmp}/throughput.db")
                out["throughput"] = {"n": args.n, "bare_paho_windows_per_s": round(bare, 1), "collector": coll,
                                     "ratio": round(coll["windows_per_s"] / bare, 3), "target_ratio": 0.7}
            if "lag" not in skip:
                out["lag"] = {**lag(broker, f"sqlite:///{tmp}/lag.db", args.devices, args.lag_s, rng),
                              "target_p99_s": 1.0}
        finally:
            broker.stop()
        if "horizon" not in skip:
            out["horizon"] = {**horizon(f"sqlite:///{tmp}/horizon.db", args.devices, rng), "target_s": 1.0}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
