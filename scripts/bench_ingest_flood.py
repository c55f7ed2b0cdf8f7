#!/usr/bin/env python3
"""A QoS 0 flood while the collector's writer is blocked: what waits for it, and what it costs.

Starts a private mosquitto, a collector on a fresh PostgreSQL schema whose ``windows`` table
another connection holds locked, floods ``--n`` QoS 0 windows (plus ``--qos1`` QoS 1 ones),
then releases the lock and waits until every QoS 1 window is stored. Each variant runs in its
own process (so its peak memory is its own):

    bounded     the defaults (ingest_queue_max 10000, receive_maximum 2000, 64 MiB)
    baseline    the same collector with the bound lifted (what fb3196b did: no bound at all)

Prints JSON: per variant the peak queue depth, QoS 0 shed, peak resident memory growth and
whether every QoS 1 window was stored. Refuses to print a figure if the flood did not reach
the collector. Needs PostgreSQL (``HARKEN_TEST_PG``, default the local ``test`` database).

    python scripts/bench_ingest_flood.py --n 100000
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG = os.environ.get("HARKEN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
UNBOUNDED = 10_000_000


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def run_variant(variant: str, n: int, qos1: int) -> dict:
    import random

    import paho.mqtt.client as mqtt
    import psycopg

    from cloud.collector import Collector
    from cloud.config import load_collector_config
    from shared.codec import encode
    from shared.topics import Topics
    from tests.brokers import Mosquitto
    from tests.cloud.conftest import random_window

    schema = f"harken_flood_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(PG, autocommit=True)
    admin.execute(f"CREATE SCHEMA {schema}")
    db = f"{PG}?options=-csearch_path%3D{schema}"
    broker = Mosquitto(Path(f"/tmp/{schema}")).start()
    extra = {} if variant == "bounded" else {"ingest_queue_max": UNBOUNDED, "ingest_queue_bytes": 1 << 40}
    cfg = load_collector_config(env={}, overrides={"broker_url": broker.url, "db_url": db, "http_port": 0,
                                                   "client_id": f"flood-{variant}", "drift_enabled": False,
                                                   "rollouts_enabled": False, "db_timeout_s": 600, **extra})
    c = Collector(cfg)
    c.start()
    c.ingest.wait_connected(10)
    lock = psycopg.connect(db, autocommit=False)
    topics = Topics()
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], c.ingest.queue.qsize())
            time.sleep(0.005)

    try:
        rss0 = _rss_mb()
        lock.execute("LOCK TABLE windows IN ACCESS EXCLUSIVE MODE")
        threading.Thread(target=sample, daemon=True).start()
        flood = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flooder", protocol=mqtt.MQTTv5)
        flood.max_queued_messages_set(0)
        flood.connect("127.0.0.1", broker.port)
        flood.loop_start()
        payload = encode(random_window(random.Random(0), "flood", 1, 0, t_start=time.time()))
        t0 = time.monotonic()
        for _ in range(n):
            flood.publish(topics.stats("flood"), payload, qos=0)
        now = time.time()
        for i in range(qos1):
            flood.publish(topics.stats("steady"),
                          encode(random_window(random.Random(i), "steady", 1, i, t_start=now + i)), qos=1)
        q = c.ingest.queue
        deadline = time.monotonic() + 300
        while q.shed + q.qsize() < n + qos1 - cfg.batch_max and time.monotonic() < deadline:
            time.sleep(0.05)
        arrived = q.shed + q.qsize() + cfg.batch_max >= n + qos1
        stop.set()
        rss1 = _rss_mb()
        lock.rollback()
        deadline = time.monotonic() + 300
        stored = 0
        while time.monotonic() < deadline:
            with c.store.transaction(write=False) as cur:
                stored = cur.execute("SELECT COUNT(*) FROM windows WHERE device = ?", ("steady",)).fetchone()[0]
            if stored == qos1:
                break
            time.sleep(0.1)
        return {"variant": variant, "arrived": arrived, "flood_s": round(time.monotonic() - t0, 2),
                "peak_depth": peak[0], "shed": q.shed, "shed_bytes": q.shed_bytes,
                "rss_growth_mb": round(rss1 - rss0, 1), "qos1_stored": stored, "qos1_sent": qos1}
    finally:
        stop.set()
        lock.close()
        c.stop()
        broker.stop()
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="QoS 0 windows in the flood")
    ap.add_argument("--qos1", type=int, default=200, help="QoS 1 windows sent during the flood")
    ap.add_argument("--variant", choices=("bounded", "baseline"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.n, args.qos1)))
        return 0
    results = {}
    for variant in ("baseline", "bounded"):
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--n", str(args.n),
                              "--qos1", str(args.qos1)], capture_output=True, text=True, cwd=ROOT, timeout=1200)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    if not all(r["arrived"] for r in results.values()):
        print("the flood did not reach the collector: no figures", file=sys.stderr)
        return 1
    print(json.dumps({"qos0_flood": args.n, "qos1": args.qos1, "machine": os.uname().nodename,
                      "python": sys.version.split()[0], **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
