"""The parts of ``scripts/bench_scale.py``: real windows, collector replicas and publishers in
processes of their own, CPU accounting, PostgreSQL schemas, and the loss and storage checks."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import queue
import statistics
import subprocess
import time
import uuid
import zlib
from pathlib import Path

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
GROUP_PREFIX = "bench-scale"
RECEIVE_MAXIMUM = 2000
DEVICE_WINDOW_S = 10.0


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
            "window_body_json_bytes": round(float(body[1] or 0)),
            "window_body_stored_bytes": round(float(body[0] or 0)),
            "rollup_rows": n_r, "bytes_per_rollup_row": round(r_bytes / max(n_r, 1)),
            "rollup_body_stored_bytes": round(float(rbody[0] or 0))}


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1] if len(values) > 1 else \
        (values[0] if values else float("nan"))


# -- schemas, payloads, machine ------------------------------------------------------------------
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


def rollup_worker(db_url: str, ready, start, out) -> None:
    from cloud.store import open_store

    with open_store(db_url) as s:
        ready.put(True)
        start.wait()
        t0, cpu0 = time.perf_counter(), time.process_time()
        rolled = s.rollup(300, 2 * 86400.0).rolled
        out.put((rolled, time.perf_counter() - t0, time.process_time() - cpu0))


def machine(pg: str) -> dict:
    import paho.mqtt
    import psycopg

    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    with psycopg.connect(pg) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
    return {"cores": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform(), "psycopg": psycopg.__version__,
            "postgresql": server, "paho": paho.mqtt.__version__, "mosquitto": mosq}
