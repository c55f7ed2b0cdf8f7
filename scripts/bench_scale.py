#!/usr/bin/env python
"""Collector replicas on one PostgreSQL: throughput with one and two, ingest lag, loss; prints JSON.

    python scripts/bench_scale.py [--devices 2000] [--backlog 30000] [--live-s 20] [--rate R]

Runs a private mosquitto on a free loopback port and one PostgreSQL schema per phase (in the
database of ``--pg``, dropped at the end). Each replica is a process of its own running the
collector (``cloud.collector.Collector``, as ``harken collector run`` does) in one
shared-subscription group, with rollups every 5 s and its rollout controller; drift is off (it
needs registered profiles). The windows are real: captured from two simulated devices running
the real agent with a lab bundle at the default 10 s window, then re-stamped per simulated
device and sequence number (one MQTT client per publisher process sends for many devices).

    window       the captured windows: wire bytes (zlib JSON) and stored bytes per window row
    throughput   a backlog of ``--backlog`` windows queued on the broker for the group, drained by
                 one replica, then (a new group, a new schema) by two; windows/s from the first
                 commit to the last, and the ratio. Publishers have finished before the replicas
                 start, so the replicas, mosquitto and PostgreSQL share the machine alone.
    lag          ``--live-s`` seconds of live traffic at ``--rate`` windows/s (default 1.25x what
                 one replica drained: more than one replica can take), into two replicas and, as
                 the baseline, into one; publish -> committed lag (p50, p99, max) of every
                 fourth window, from the collector's commit hook.
    rollup       the backlog stored without a broker, then rolled up by one collector and (a new
                 schema) by two at once: windows/s and CPU per window (every window lands in its
                 5-minute fleet bucket too, the row concurrent rollups queue on)
    loss         per phase: windows published but not stored (lost), rows stored twice, and
                 windows the fleet-wide rollups count more or less than once. All must be 0:
                 otherwise no figure is printed and the exit code is 1.

The machine, versions and every baseline (one replica) come from the same run.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_scale_rig import (  # noqa: E402
    DEVICE_WINDOW_S, GROUP_PREFIX, PG_DEFAULT, Replicas, Schemas, backend_pids, capture_windows, encoded, loss, machine,
    payloads, proc_cpu_s, publish, quantile, rollup_worker, storage, wait_stored)

LAG_SAMPLE_EVERY = 4  # the commit hook decodes every 4th window for its send time


# -- phases ---------------------------------------------------------------------------------------
def throughput(broker, schemas: Schemas, templates: list[dict], replicas: int, args) -> dict:
    """Drain a backlog queued on the broker for the group (publishers done before the replicas start)."""
    from cloud.store import open_store

    db_url = schemas.new(f"drain{replicas}")
    open_store(db_url).close()  # migrated before the replicas start
    group = f"{GROUP_PREFIX}-drain{replicas}-{schemas.tag}"
    r = Replicas(broker.url, db_url, group, replicas)
    r.start().stop()  # their sessions and subscriptions now exist: the broker queues for them
    items = payloads(templates, args.devices, args.backlog)
    sent = {(d, q) for _, d, q, _ in items}
    published = publish(broker.port, encoded(items))
    broker_cpu = proc_cpu_s(broker.proc.pid)
    r.start()
    got = wait_stored(db_url, len(items), 900)
    pg_cpu = sum(proc_cpu_s(pid) for pid in backend_pids(args.pg, schemas.app(f"drain{replicas}")))
    broker_cpu = proc_cpu_s(broker.proc.pid) - broker_cpu
    reports = r.stop()
    commits = sorted(c for rep in reports for c in rep["commits"] if c[1])
    first, last = commits[0][0], commits[-1][0]
    n_after_first = sum(c[1] for c in commits) - commits[0][1]
    replica_cpu = sum(max(c[2] for c in rep["commits"]) - min(c[2] for c in rep["commits"])
                      for rep in reports if rep["commits"])
    drain_s = last - first
    cpu = {"replicas": round(replica_cpu, 2), "postgres_backends": round(pg_cpu, 2), "mosquitto": round(broker_cpu, 2)}
    return {"replicas": replicas, "published": published, "stored": got,
            "windows_per_s": round(n_after_first / max(drain_s, 1e-9), 1),
            "drain_s": round(drain_s, 2), "per_replica_windows": [rep["windows_new"] for rep in reports],
            "messages_received": sum(rep["messages"] for rep in reports),
            "cpu_s": cpu, "cpu_ms_per_window": {k: round(1000 * v / len(items), 3) for k, v in cpu.items()},
            "cores_busy": round(sum(cpu.values()) / max(drain_s, 1e-9), 2),
            "replica_windows_per_cpu_s": round(len(items) / max(replica_cpu, 1e-9), 1),
            "check": loss(db_url, sent, 300), "db_url": db_url}


def live(broker, schemas: Schemas, templates: list[dict], replicas: int, rate: float, args) -> dict:
    """Live traffic at ``rate``; publish -> commit lag of every ``LAG_SAMPLE_EVERY``-th window."""
    from cloud.store import open_store

    db_url = schemas.new(f"live{replicas}")
    open_store(db_url).close()
    group = f"{GROUP_PREFIX}-live{replicas}-{schemas.tag}"
    r = Replicas(broker.url, db_url, group, replicas, sample_every=LAG_SAMPLE_EVERY).start()
    n = int(rate * args.live_s)
    items = payloads(templates, args.devices, n)
    sent = {(d, q) for _, d, q, _ in items}
    published = publish(broker.port, encoded(items, paced=True), rate=rate)
    got = wait_stored(db_url, n, 900)
    reports = r.stop()
    lags = sorted(x for rep in reports for x in rep["lags"])
    return {"replicas": replicas, "rate_windows_per_s": rate, "published": published, "stored": got,
            "lag_samples": len(lags), "lag_p50_s": round(quantile(lags, 0.5), 3),
            "lag_p99_s": round(quantile(lags, 0.99), 3), "lag_max_s": round(lags[-1], 3) if lags else None,
            "per_replica_windows": [rep["windows_new"] for rep in reports],
            "check": loss(db_url, sent, 300)}


def rollups(schemas: Schemas, templates: list[dict], workers: int, args) -> dict:
    """Windows stored unrolled (no broker), then rolled up by ``workers`` collectors at once."""
    from cloud.store import Batch, Received, open_store

    db_url = schemas.new(f"rollup{workers}")
    items = payloads(templates, args.devices, args.backlog)
    now = time.time()
    with open_store(db_url) as s:
        for i in range(0, len(items), 1000):
            batch = Batch(windows=[Received(w, now) for _, _, _, w in items[i:i + 1000]])
            s.write(batch)
    ctx = mp.get_context("spawn")
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    ps = [ctx.Process(target=rollup_worker, args=(db_url, ready, start, out)) for _ in range(workers)]
    for p in ps:
        p.start()
    for _ in ps:
        ready.get(timeout=60)
    t0 = time.perf_counter()
    start.set()
    results = [out.get(timeout=900) for _ in ps]
    wall = time.perf_counter() - t0
    for p in ps:
        p.join(30)
    rolled = sum(r[0] for r in results)
    cpu = sum(r[2] for r in results)
    return {"workers": workers, "windows": len(items), "rolled": rolled, "seconds": round(wall, 2),
            "windows_per_s": round(rolled / wall, 1), "worker_cpu_ms_per_window": round(1000 * cpu / max(rolled, 1), 3),
            "per_worker_rolled": [r[0] for r in results],
            "check": loss(db_url, {(d, q) for _, d, q, _ in items}, 300)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg", default=os.environ.get("HARKEN_TEST_PG", PG_DEFAULT), help="PostgreSQL database URL")
    ap.add_argument("--devices", type=int, default=2000, help="simulated devices the windows come from")
    ap.add_argument("--backlog", type=int, default=30000, help="windows queued for each drain")
    ap.add_argument("--live-s", type=float, default=20.0, help="seconds of live traffic per lag run")
    ap.add_argument("--rate", type=float, default=None, help="live windows/s (default 1.25x one replica's drain)")
    args = ap.parse_args(argv)

    from shared.codec import encode
    from tests.brokers import Mosquitto

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    broker = Mosquitto(tmp / "mosquitto").start()
    schemas = Schemas(args.pg)
    out: dict = {"machine": machine(args.pg)}
    try:
        templates = capture_windows(tmp, broker.url)
        wire = sorted(len(encode(w)) for w in templates)
        out["window"] = {"captured": len(templates), "window_s": DEVICE_WINDOW_S,
                         "features": len(templates[0]["input"]["features"]),
                         "wire_bytes_median": wire[len(wire) // 2], "wire_bytes_max": wire[-1]}
        one = throughput(broker, schemas, templates, 1, args)
        two = throughput(broker, schemas, templates, 2, args)
        out["window"].update(storage(two.pop("db_url")))
        one.pop("db_url")
        out["throughput"] = {"one_replica": one, "two_replicas": two,
                             "ratio": round(two["windows_per_s"] / one["windows_per_s"], 2)}
        out["rollup"] = {"one": rollups(schemas, templates, 1, args), "two": rollups(schemas, templates, 2, args)}
        rate = args.rate or round(1.25 * one["windows_per_s"])
        out["lag"] = {"two_replicas": live(broker, schemas, templates, 2, rate, args),
                      "one_replica": live(broker, schemas, templates, 1, rate, args)}
        out["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        broker.stop()
        schemas.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    checks = {name: part["check"] for name, part in (("drain_one", one), ("drain_two", two),
                                                      ("rollup_one", out["rollup"]["one"]),
                                                      ("rollup_two", out["rollup"]["two"]),
                                                      ("live_two", out["lag"]["two_replicas"]),
                                                      ("live_one", out["lag"]["one_replica"]))}
    bad = {k: v for k, v in checks.items() if any(v.values())}
    if bad:
        print(json.dumps({"error": "windows lost, stored twice or miscounted by rollups: no figures", "checks": bad,
                          "machine": out["machine"]}, indent=2))
        return 1
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
