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
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
GROUP_PREFIX = "bench-scale"
RECEIVE_MAXIMUM = 2000
DEVICE_WINDOW_S = 10.0
LAG_SAMPLE_EVERY = 4  # the commit hook decodes every 4th window for its send time


# -- real windows -------------------------------------------------------------------------------
def capture_windows(root: Path, broker_url: str, n_devices: int = 2, audio_s: float = 120.0) -> list[dict]:
    """Windows of real agents (lab bundle, default window) as they arrive on the broker."""
    import paho.mqtt.client as mqtt

    from cloud.lab.fixtures import tiny_dataset_and_bundle
    from edge.sim.fleet import FleetPlan, run_fleet
    from shared.messages import decode

    lab = tiny_dataset_and_bundle(root / "lab", per_word=4)
    got: list[bytes] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-capture", protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: got.append(m.payload)
    host, port = broker_url.split("//")[1].split(":")
    sub.connect(host, int(port))
    sub.subscribe("harken/v1/dev/+/stats", qos=1)
    sub.loop_start()
    time.sleep(0.5)
    plan = FleetPlan(devices=n_devices, data_dir=str(lab.data_dir), state_root=str(root / "agents"),
                     model=str(lab.released_bundle_path), trust_keys=(str(lab.public_key_path),),
                     release_keys=(str(lab.release_public_key_path),), broker_url=broker_url, speed=20.0,
                     duration_s=audio_s, window_s=DEVICE_WINDOW_S, processes=1)
    result = run_fleet(plan)
    deadline = time.monotonic() + 10
    while len(got) < result["windows"] and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.loop_stop()
    sub.disconnect()
    windows = [decode(p, "window") for p in got]
    full = [w for w in windows if abs(w["duration_s"] - DEVICE_WINDOW_S) < 0.5]  # not the last, partial one
    if not full:
        raise RuntimeError("the simulated agents sent no full window; check the lab bundle and the broker")
    return full


def payloads(templates: list[dict], devices: int, n: int, *, seq0: int = 0, t0: float | None = None,
             prefix: str = "harken/v1") -> list[tuple[str, str, int, dict]]:
    """``n`` windows over ``devices`` simulated devices: (topic, device, seq, window), seq consecutive."""
    t0 = time.time() if t0 is None else t0
    out = []
    for i in range(n):
        device, seq = f"sim-{i % devices:05d}", seq0 + i // devices
        w = dict(templates[i % len(templates)], device=device, boot=1, seq=seq,
                 t_start=t0 + seq * DEVICE_WINDOW_S, audio_start_s=seq * DEVICE_WINDOW_S)
        out.append((f"{prefix}/dev/{device}/stats", device, seq, w))
    return out


# -- replicas -------------------------------------------------------------------------------------
def replica_main(overrides: dict, ready, stop, out, sample_every: int) -> None:
    """One collector replica; reports commit times and sampled publish -> commit lags at the end."""
    import logging

    from cloud.collector import Collector
    from cloud.config import load_collector_config

    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s %(levelname)s [{overrides['client_id']}] "
                                                      "%(name)s: %(message)s")
    commits: list[tuple[float, int, float]] = []  # (commit time, new windows, process CPU seconds)
    lags: list[float] = []
    counter = [0]

    def on_commit(messages, result, commit_t) -> None:
        commits.append((commit_t, result.windows_new, time.process_time()))
        if sample_every:
            for m in messages:
                counter[0] += 1
                if counter[0] % sample_every == 0 and m.topic.endswith("/stats"):
                    sent_t = json.loads(zlib.decompress(m.payload)).get("sent_t")
                    if sent_t is not None:
                        lags.append(commit_t - sent_t)

    cfg = load_collector_config(env={}, overrides=overrides)
    collector = Collector(cfg, on_commit=on_commit)
    collector.start()
    ready.put(collector.ingest.wait_connected(30))
    stop.wait()
    collector.stop()
    out.put({"client_id": cfg.client_id, "commits": commits, "lags": lags,
             "messages": collector.ingest.stats.messages, "windows_new": collector.ingest.stats.windows_new})


class Replicas:
    """``n`` replica processes of one group (client ids stable: sessions outlive a stop)."""

    def __init__(self, broker_url: str, db_url: str, group: str, n: int, sample_every: int = 0):
        self.ctx = mp.get_context("spawn")
        self.configs = [{"broker_url": broker_url, "db_url": db_url, "group": group,
                         "client_id": f"{group}-{i}", "http_port": 0, "drift_enabled": False,
                         "receive_maximum": RECEIVE_MAXIMUM, "rollup_interval_s": 5.0} for i in range(n)]
        self.sample_every = sample_every
        self.procs: list = []

    def start(self) -> "Replicas":
        self.ready, self.stop_event, self.out = self.ctx.Queue(), self.ctx.Event(), self.ctx.Queue()
        self.procs = [self.ctx.Process(target=replica_main, args=(c, self.ready, self.stop_event, self.out,
                                                                   self.sample_every), daemon=True)
                      for c in self.configs]  # daemons: a failed run does not wait for them at exit
        for p in self.procs:
            p.start()
        for _ in self.procs:
            if not self.ready.get(timeout=60):
                raise RuntimeError("a replica did not connect to the broker within 30 s")
        return self

    def stop(self) -> list[dict]:
        self.stop_event.set()
        reports = [self.out.get(timeout=120) for _ in self.procs]
        for p in self.procs:
            p.join(30)
        return reports


# -- publishing -----------------------------------------------------------------------------------
SENT_MARK = b'"sent_t":1000000000.000000'  # replaced by the send time, same width, when paced


def publisher_main(port: int, items: list[tuple[str, bytes]], rate: float | None, client_id: str, out) -> None:
    """Publish at QoS 1 (at ``rate`` per second, or as fast as the broker takes them) and wait for
    every PUBACK. Paced items are uncompressed JSON holding ``SENT_MARK``: the send time goes in
    and the window is compressed as it leaves. Reports (first, last) send times."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos, t0 = [], time.time()
    for i, (topic, payload) in enumerate(items):
        if rate:
            delay = t0 + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            payload = zlib.compress(payload.replace(SENT_MARK, b'"sent_t":%.6f' % time.time()), 1)
        infos.append(c.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(300)
    out.put((t0, time.time()))
    c.disconnect()
    c.loop_stop()


def publish(port: int, items: list[tuple[str, bytes]], rate: float | None = None, procs: int = 2) -> dict:
    """Split ``items`` over ``procs`` publisher processes (device by device, so seqs stay in order)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    shares = [[it for it in items if int(it[0].split("/")[-2][4:]) % procs == k] for k in range(procs)]
    ps = [ctx.Process(target=publisher_main, args=(port, share, rate / procs if rate else None,
                                                   f"bench-pub-{uuid.uuid4().hex[:6]}", out)) for share in shares]
    for p in ps:
        p.start()
    spans = []
    while len(spans) < len(ps):
        try:
            spans.append(out.get(timeout=1.0))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in ps):
                raise RuntimeError("a publisher failed; see its traceback above") from None
    for p in ps:
        p.join(30)
    first, last = min(s[0] for s in spans), max(s[1] for s in spans)
    return {"windows": len(items), "seconds": round(last - first, 2),
            "windows_per_s": round(len(items) / max(last - first, 1e-9), 1)}


# -- CPU ------------------------------------------------------------------------------------------
def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_pids(pg: str, app: str) -> list[int]:
    """PostgreSQL backends of this run's connections (by application_name)."""
    import psycopg

    with psycopg.connect(pg, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                           (app,)).fetchall()]


# -- checks ---------------------------------------------------------------------------------------
def stored_count(db_url: str) -> int:
    from cloud.store import open_store

    with open_store(db_url) as s, s.transaction(write=False) as cur:
        return cur.execute("SELECT COUNT(*) FROM windows").fetchone()[0]


def wait_stored(db_url: str, n: int, timeout_s: float) -> int:
    deadline, got = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline:
        got = stored_count(db_url)
        if got >= n:
            break
        time.sleep(0.2)
    return got


def loss(db_url: str, sent: set[tuple[str, int]], bucket_s: int) -> dict:
    """Lost / twice-stored windows, and windows the fleet rollups miss or count twice (after a rollup)."""
    from cloud.store import FLEET, open_store

    with open_store(db_url) as s:
        s.rollup(bucket_s, 2 * 86400.0)
        with s.transaction(write=False) as cur:
            rows = cur.execute("SELECT device, seq FROM windows").fetchall()
            rolled = cur.execute("SELECT COALESCE(SUM(n_windows), 0) FROM rollups WHERE device = ?",
                                 (FLEET,)).fetchone()[0]
            per_device = cur.execute("SELECT COALESCE(SUM(n_windows), 0) FROM rollups WHERE device <> ?",
                                     (FLEET,)).fetchone()[0]
    stored = {(d, int(q)) for d, q in rows}
    return {"lost": len(sent - stored), "stored_twice": len(rows) - len(stored), "unexpected": len(stored - sent),
            "rollup_miscount": abs(int(rolled) - len(rows)) + abs(int(per_device) - len(rows))}


def storage(db_url: str) -> dict:
    """Bytes per stored window (table, TOAST and indexes) and per rollup row, from PostgreSQL,
    once ``VACUUM FULL`` has dropped the row versions that claiming and merging left behind
    (autovacuum reclaims them in a running store)."""
    import psycopg

    from cloud.store import open_store

    with open_store(db_url) as s, s.transaction(write=False) as cur:
        schema = cur.execute("SELECT current_schema()").fetchone()[0]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for table in ("windows", "rollups"):
            conn.execute(f"VACUUM FULL ANALYZE {schema}.{table}")
    with open_store(db_url) as s, s.transaction(write=False) as cur:
        n_w = cur.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
        n_r = cur.execute("SELECT COUNT(*) FROM rollups").fetchone()[0]
        w_bytes = cur.execute(f"SELECT pg_total_relation_size('{schema}.windows')").fetchone()[0]
        r_bytes = cur.execute(f"SELECT pg_total_relation_size('{schema}.rollups')").fetchone()[0]
        body = cur.execute("SELECT AVG(pg_column_size(body)), AVG(octet_length(body)) FROM windows").fetchone()
        rbody = cur.execute("SELECT AVG(pg_column_size(body)) FROM rollups").fetchone()
    return {"window_rows": n_w, "bytes_per_window_row": round(w_bytes / max(n_w, 1)),
            "window_body_json_bytes": round(float(body[1] or 0)), "window_body_stored_bytes": round(float(body[0] or 0)),
            "rollup_rows": n_r, "bytes_per_rollup_row": round(r_bytes / max(n_r, 1)),
            "rollup_body_stored_bytes": round(float(rbody[0] or 0))}


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1] if len(values) > 1 else \
        (values[0] if values else float("nan"))


# -- phases ---------------------------------------------------------------------------------------
class Schemas:
    def __init__(self, pg: str):
        import psycopg

        self.pg, self.conn, self.made = pg, psycopg.connect(pg, autocommit=True), []
        self.tag = uuid.uuid4().hex[:8]

    def new(self, phase: str) -> str:
        name = f"harken_bench_scale_{self.tag}_{phase}"
        self.conn.execute(f"CREATE SCHEMA {name}")
        self.made.append(name)
        return f"{self.pg}?application_name={self.app(phase)}&options=-csearch_path%3D{name}"

    def app(self, phase: str) -> str:
        return f"bench-scale-{self.tag}-{phase}"

    def drop(self) -> None:
        for name in self.made:
            self.conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        self.conn.close()


def encoded(items: list[tuple[str, str, int, dict]], paced: bool = False) -> list[tuple[str, bytes]]:
    """Wire payloads; for paced publishing, JSON with a ``sent_t`` mark the publisher fills in."""
    from shared.codec import dumps, encode

    if not paced:
        return [(topic, encode(w)) for topic, _, _, w in items]
    out = []
    for topic, _, _, w in items:
        raw = dumps({"v": "1.0", **w, "sent_t": 1e9}).replace(b'"sent_t":1000000000.0', SENT_MARK)
        assert SENT_MARK in raw
        out.append((topic, raw))
    return out


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


def rollup_worker(db_url: str, ready, start, out) -> None:
    from cloud.store import open_store

    with open_store(db_url) as s:
        ready.put(True)
        start.wait()
        t0, cpu0 = time.perf_counter(), time.process_time()
        rolled = s.rollup(300, 2 * 86400.0).rolled
        out.put((rolled, time.perf_counter() - t0, time.process_time() - cpu0))


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


def machine(pg: str) -> dict:
    import paho.mqtt
    import psycopg

    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    with psycopg.connect(pg) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
    return {"cores": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform(), "psycopg": psycopg.__version__,
            "postgresql": server, "paho": paho.mqtt.__version__, "mosquitto": mosq}


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
