#!/usr/bin/env python
"""Collector benchmark; prints JSON. Runs a private mosquitto on a free loopback port.

The collector runs as deployed: drift and rollups on, the rollout controller on (with the
bundle's signing key configured), SQLite with synchronous=FULL. Its windows are a real lab
bundle's (registered in its registry, so drift evaluates the model instead of skipping it),
drawn from the bundle's reference profile, one per device per 10 s (the agent's default
window); see ``bench_collector_data``.

    throughput  a backlog of ``--n`` windows queued in the broker for the collector's session,
                then drained: decode, validate, commit, acknowledge, with the maintenance
                thread rolling up every ``--rollup-interval-s`` and evaluating drift every
                ``--drift-every-s`` (the collector's defaults: 5 s, and once per 300 s drift
                step, the first at the first maintenance pass, which reads the backlog).
                Baseline: a bare paho subscriber (auto-ack, no work) draining the same windows
                from the same broker. The two alternate ``--repeat`` times; medians and the
                median of the paired ratios. Target: stored windows/s >= 0.7x the bare rate.
                ``stored_and_rolled`` is the rate until the last window is also rolled up.
                CPU µs per window of each thread (paho's network thread, the writer thread, the
                maintenance thread) and child (``writer-process``, ``rollup-process``; in the
                collector's own threads with ``--in-process``; a child's start-up, measured apart
                in the same run, left out) beside the bare subscriber's: on a shared machine CPU time
                moves far less than rates do. How many rollup passes and drift evaluations
                started during the drain is printed: with a short drain (under 5 s) there are
                none, and the stored rate is ingest's alone; ``--n 60000`` overlaps them.
                (The broker queues at most 100,000 messages per session.)
    lag         ``--devices`` devices each sending one window every 10 s for ``--lag-s`` seconds;
                publish -> committed lag. Target p99 <= 1 s.
    horizon     24 h of real 10 s windows from ``--horizon-devices`` devices, rolled up, plus the
                windows of one maintenance interval not rolled up yet; the merges a drift report
                and the dashboard read. Target <= 1 s.

No figure is printed from a run that did not do what it measures: the bench exits 1 if the
collector stored fewer windows than were sent, refused any, left any out of the rollups, or
its drift job did not read them against the model's profile.

    python scripts/bench_collector.py [--n 20000] [--repeat 3] [--lag-s 40] [--devices 1000]
                                      [--horizon-devices 20] [--bundle B.hkb --trust-key K.pub]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from bench_collector_data import (TOPICS, WINDOW_S, BenchFailed, ProfileWindows, device_name,  # noqa: E402
                                  fleet_windows, lab_bundle)
from bench_collector_horizon import horizon  # noqa: E402
from cloud.collector import Collector, freeze_startup_heap  # noqa: E402
from cloud.config import load_collector_config  # noqa: E402
from cloud.ingest_handler import IngestHandler  # noqa: E402
from cloud.ingest_writer import WriterProcess  # noqa: E402
from cloud.rollup_process import RollupProcess  # noqa: E402
from cloud.store import open_store  # noqa: E402
from shared.bundle import load_bundle  # noqa: E402
from shared.codec import encode  # noqa: E402
from tests.brokers import Mosquitto  # noqa: E402

RECEIVE_MAXIMUM = 2000


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by name (robust to other load, unlike rates)."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for t in threading.enumerate():
        try:
            with open(f"/proc/self/task/{t.native_id}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, TypeError):
            continue
        name = "paho" if t.name.startswith("paho") else t.name
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def process_cpu(pid: int | None) -> float:
    """CPU seconds of a child process (the collector's writer or rollup process), 0 when there is none."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_startup_cpu(folder: Path) -> dict[str, float]:
    """CPU seconds a writer and a rollup child spend starting (interpreter, imports, store, a first
    empty job), measured in this run. A drain's child figures hold it once and the collector's own
    threads never (their imports are done before), so it is taken out of the per-window figures."""
    url = f"sqlite:///{folder}/child-startup.db"
    open_store(url).close()
    writer = WriterProcess(url, None, IngestHandler(TOPICS), on_failure=lambda error: None, local=None)
    writer.start()
    try:
        if writer.process([]) is None:
            raise BenchFailed("the writer child did not answer an empty batch")
        out = {"writer-process": process_cpu(writer.pid)}
    finally:
        writer.close()
    rollups = RollupProcess(url, None)
    try:
        rollups.rollup(300, 86400.0, now=time.time())
        out["rollup-process"] = process_cpu(rollups.pid)
    finally:
        rollups.close()
    return out


def cpu_us_per_window(before: dict, after: dict, n: int) -> dict[str, float]:
    return {k: round((after[k] - before.get(k, 0.0)) / n * 1e6, 1) for k in sorted(after)
            if after[k] - before.get(k, 0.0) > 0}


def _props(session_s: int) -> Properties:
    p = Properties(PacketTypes.CONNECT)
    p.SessionExpiryInterval = session_s
    p.ReceiveMaximum = RECEIVE_MAXIMUM
    return p


def _client(client_id: str) -> mqtt.Client:
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)


def drop_session(port: int, client_id: str) -> None:
    """End a persistent session, so its queue does not collect the next run's windows."""
    c = _client(client_id)
    c.connect("127.0.0.1", port, clean_start=True, properties=_props(0))
    c.disconnect()


def publish(port: int, items: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1 and wait for every PUBACK."""
    c = _client("bench-pub")
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = [c.publish(t, p, qos=1) for t, p in items]
    for i in infos:
        i.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


def bare_subscriber(port: int, items: list[tuple[str, bytes]], run: int) -> tuple[float, float]:
    """Windows/s a bare paho subscriber drains from its queued session, and its CPU µs per window."""
    client_id = f"bench-bare-{run}"
    got, done = [0], threading.Event()

    def on_message(client, userdata, msg):
        got[0] += 1
        if got[0] == len(items):
            done.set()

    c = _client(client_id)
    c.connect("127.0.0.1", port, clean_start=True, properties=_props(3600))
    c.subscribe(TOPICS.shared_filter(client_id, "stats"), qos=1)
    c.loop_start()
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()
    publish(port, items)
    c = _client(client_id)
    c.on_message = on_message
    t0 = time.perf_counter()
    c.connect("127.0.0.1", port, clean_start=False, properties=_props(3600))
    c.loop_start()
    cpu0 = thread_cpu()
    if not done.wait(300):
        raise BenchFailed(f"the bare subscriber got {got[0]} of {len(items)} windows")
    rate = len(items) / (time.perf_counter() - t0)
    cpu = cpu_us_per_window(cpu0, thread_cpu(), len(items)).get("paho", 0.0)
    c.disconnect()
    c.loop_stop()
    drop_session(port, client_id)
    return rate, cpu


def collector_config(broker: Mosquitto, folder: Path, client_id: str, key: Path, **kw):
    return load_collector_config(env={}, overrides={
        "broker_url": broker.url, "db_url": f"sqlite:///{folder}/{client_id}.db", "client_id": client_id,
        "group": client_id, "registry_dir": str(folder / f"{client_id}-registry"), "public_keys": [str(key)],
        "samples_dir": str(folder / f"{client_id}-samples"), "http_port": 0, **kw})


class Counted:
    """Wraps the collector's rollup and drift job to count what they did during the run."""

    def __init__(self, collector: Collector):
        self.rolled = self.unmergeable = self.rollups = self.drift_runs = 0
        self.started: dict[str, list[float]] = {"rollup": [], "drift": []}  # perf_counter at each start
        job, rollup = collector.drift_job, collector.rollup

        def counted_rollup(*a, **kw):
            self.started["rollup"].append(time.perf_counter())
            result = rollup(*a, **kw)
            self.rollups += 1
            self.rolled += result.rolled
            self.unmergeable += result.unmergeable
            return result

        collector.rollup = counted_rollup
        before = [job.last_t]

        def counted_drift(store_, now):
            t = time.perf_counter()
            changes = type(job).__call__(job, store_, now)
            if job.last_t != before[0]:
                self.started["drift"].append(t)
                before[0] = job.last_t
                self.drift_runs += 1
            return changes

        collector.drift_job = counted_drift
        self.job = job


def prepared_collector(broker, folder: Path, client_id: str, bundle: Path, key: Path, on_commit=None,
                       **kw) -> Collector:
    """A collector whose session exists (so the broker queues for it) and whose registry holds the bundle."""
    cfg = collector_config(broker, folder, client_id, key, receive_maximum=RECEIVE_MAXIMUM, **kw)
    first = Collector(cfg)
    from cloud.registry import Registry

    Registry(first.store, cfg.registry_dir, first.public_keys).register(bundle)
    first.start()
    if not first.ingest.wait_connected(10):
        raise BenchFailed("the collector did not connect")
    first.stop()
    return Collector(cfg, on_commit=on_commit)


def drift_read(job, model: str) -> dict:
    """What the drift job's last evaluation span holds for ``model`` (read again from the store):
    utterances laid against the model's profile, and windows skipped (no profile, bad bins)."""
    if job.engine is None or job.last_t is None:
        return {"utterances": 0, "skipped": {"not evaluated": 1}}
    snap = job.engine.snapshots(job.last_t)["output"]
    table = snap.tables.get(model)
    return {"utterances": int(table.counts["output"]["labels"].sum()) if table else 0, "skipped": snap.skipped}


def collector_drain(broker, folder: Path, items, model: str, bundle: Path, key: Path, run: int, args,
                    child_startup: dict[str, float]) -> dict:
    client_id = f"bench-collector-{run}"
    c = prepared_collector(broker, folder, client_id, bundle, key, rollup_interval_s=args.rollup_interval_s,
                           drift_every_s=args.drift_every_s, writer_process=not args.in_process)
    publish(broker.port, items)
    counted = Counted(c)
    cpu0 = {**thread_cpu(), **child_startup}  # a child's start-up is not per-window work
    t0 = time.perf_counter()
    c.start()
    freeze_startup_heap()  # as Collector.run does
    n, stored_s, all_s, deadline = len(items), None, None, time.monotonic() + 600
    while time.monotonic() < deadline:
        if stored_s is None and c.ingest.stats.windows_new + c.ingest.stats.rejects >= n:
            stored_s = time.perf_counter() - t0
        if stored_s is not None and all_s is None and counted.rolled + counted.unmergeable >= n:
            all_s = time.perf_counter() - t0
        if all_s is not None and counted.drift_runs:
            break  # the drift job runs after the pass that rolled the last window: its figures are read below
        time.sleep(0.005)
    all_s = all_s or time.perf_counter() - t0
    cpu = cpu_us_per_window(cpu0, {**thread_cpu(), "writer-process": process_cpu(getattr(c.ingest._work, "pid", None)),
                                   "rollup-process": process_cpu(c.rollups.pid if c.rollups else None)}, n)
    stats, handler = c.ingest.stats, c.handler
    starts = [p.child.starts for p in (c.ingest._work, c.rollups) if hasattr(p, "child")]
    seen = drift_read(counted.job, model)
    c.stop()
    drop_session(broker.port, client_id)
    if stats.windows_new != n or stats.rejects or counted.unmergeable or counted.rolled != n:
        raise BenchFailed(f"collector run {run}: sent {n} windows, stored {stats.windows_new}, refused {stats.rejects},"
                          f" rolled up {counted.rolled}, unmergeable {counted.unmergeable}")
    if any(n_starts > 1 for n_starts in starts):
        raise BenchFailed(f"collector run {run}: a child process was started again ({starts} starts): the CPU "
                          "figures would miss the dead one's")
    if not counted.drift_runs or seen["utterances"] == 0 or seen["skipped"]:
        raise BenchFailed(f"collector run {run}: drift evaluated {counted.drift_runs} times and read {seen}: it did "
                          "not evaluate these windows against the model's profile")
    return {"stored_per_s": round(n / stored_s, 1), "stored_and_rolled_per_s": round(n / all_s, 1),
            "batches": stats.batches, "mean_batch": round(stats.messages / max(stats.batches, 1), 1),
            "rollup_passes": counted.rollups, "drift_evaluations": counted.drift_runs,
            "rollup_passes_during_drain": sum(t < t0 + stored_s for t in counted.started["rollup"]),
            "drift_evaluations_during_drain": sum(t < t0 + stored_s for t in counted.started["drift"]),
            "drift_read_utterances": seen["utterances"], "fast_path_undecided": handler.undecided,
            "cpu_us_per_window": cpu}


def throughput(broker, folder: Path, gen: ProfileWindows, bundle: Path, key: Path, args) -> dict:
    # The backlog ends where the last settled drift step ends (a collector back after a few minutes
    # offline), so the drift job reads these windows at its first evaluation.
    cfg = load_collector_config(env={}, overrides={})
    t_end = (time.time() - cfg.drift_settle_s) // cfg.drift_step_s * cfg.drift_step_s
    items = fleet_windows(gen, args.n, args.devices, t_end=t_end)
    runs = []
    startup = {} if args.in_process else child_startup_cpu(folder)
    for r in range(args.repeat):
        bare, bare_cpu = bare_subscriber(broker.port, items, r)
        coll = collector_drain(broker, folder, items, gen.model, bundle, key, r, args, startup)
        ingest_cpu = sum(coll["cpu_us_per_window"].get(k, 0.0) for k in ("paho", "harken-ingest-writer",
                                                                            "writer-process"))
        runs.append({"bare_paho_per_s": round(bare, 1), "bare_paho_cpu_us_per_window": bare_cpu, **coll,
                     "cpu_ratio_ingest": round(bare_cpu / ingest_cpu, 3) if ingest_cpu else None,
                     "ratio": round(coll["stored_per_s"] / bare, 3),
                     "ratio_stored_and_rolled": round(coll["stored_and_rolled_per_s"] / bare, 3)})
    med = lambda k: round(statistics.median(r[k] for r in runs), 3)  # noqa: E731
    return {"n": args.n, "devices": args.devices, "repeat": args.repeat, "window_bytes_mean":
            round(sum(len(p) for _, p in items) / len(items), 1),
            "bare_paho_per_s": med("bare_paho_per_s"), "collector_stored_per_s": med("stored_per_s"),
            "collector_stored_and_rolled_per_s": med("stored_and_rolled_per_s"),
            "ratio": med("ratio"), "ratio_stored_and_rolled": med("ratio_stored_and_rolled"), "target_ratio": 0.7,
            "bare_paho_cpu_us_per_window": med("bare_paho_cpu_us_per_window"),
            "cpu_ratio_ingest": med("cpu_ratio_ingest"), "child_startup_cpu_s": startup,
            "runs": runs}


def lag(broker, folder: Path, gen: ProfileWindows, bundle: Path, key: Path, args) -> dict:
    lags: list[float] = []

    def on_commit(items, result, commit_t):
        for m in items:
            lags.append(commit_t - json.loads(zlib.decompress(m.payload))["sent_t"])

    c = prepared_collector(broker, folder, "bench-lag", bundle, key, on_commit, drift_every_s=args.drift_every_s,
                           writer_process=not args.in_process)
    counted = Counted(c)
    c.start()
    freeze_startup_heap()
    c.ingest.wait_connected(10)
    pub = _client("bench-fleet")
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    devices, t0, sent = args.devices, time.time(), 0
    while time.time() - t0 < args.lag_s:
        due = int((time.time() - t0) / WINDOW_S * devices)  # devices spread evenly over the window
        while sent < due:
            d, k = sent % devices, sent // devices
            w = gen.window(device_name(d), k, time.time() - WINDOW_S, sent_t=time.time())
            pub.publish(TOPICS.stats(w["device"]), encode(w), qos=1)
            sent += 1
        time.sleep(0.005)
    deadline = time.monotonic() + 30
    while len(lags) < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    stored = c.ingest.stats.windows_new
    c.stop()
    pub.disconnect()
    pub.loop_stop()
    if len(lags) < sent or stored != sent:
        raise BenchFailed(f"lag: sent {sent} windows, committed {len(lags)}, stored {stored}")
    lags.sort()
    q = statistics.quantiles(lags, n=100)
    return {"devices": devices, "window_s": WINDOW_S, "seconds": args.lag_s, "windows": sent,
            "rollup_passes": counted.rollups, "drift_evaluations": counted.drift_runs,
            "lag_p50_s": round(q[49], 4), "lag_p99_s": round(q[98], 4), "lag_max_s": round(lags[-1], 4),
            "target_p99_s": 1.0}


def machine() -> dict:
    import msgspec
    import paho.mqtt

    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()], "paho_mqtt": paho.mqtt.__version__,
            "msgspec": msgspec.__version__, "sqlite": sqlite3.sqlite_version, "mosquitto": mosq}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="windows in each throughput run")
    ap.add_argument("--repeat", type=int, default=3, help="bare/collector pairs in the throughput part")
    ap.add_argument("--lag-s", type=float, default=40.0, help="seconds of simulated fleet traffic")
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--horizon-devices", type=int, default=20, help="devices of the 24 h horizon (8,640 windows each)")
    ap.add_argument("--rollup-interval-s", type=float, default=5.0, help="the collector's default")
    ap.add_argument("--drift-every-s", type=float, default=0.0, help="the collector's default (0: once per step)")
    ap.add_argument("--in-process", action="store_true",
                    help="writer and rollups in the collector's process (writer_process = false), as before")
    ap.add_argument("--bundle", type=Path, help="a signed lab bundle (default: train a small one, ~20 s)")
    ap.add_argument("--trust-key", type=Path, help="the bundle's signing public key")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: throughput,lag,horizon")
    args = ap.parse_args()
    if bool(args.bundle) != bool(args.trust_key):
        ap.error("--bundle and --trust-key go together")
    skip = set(filter(None, args.skip.split(",")))
    out: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bundle, key, what = lab_bundle(folder / "lab", args.bundle, args.trust_key)
        b = load_bundle(bundle, None, require_signature=False)
        gen = ProfileWindows(b.manifest, b.sha256)
        out["bundle"] = {"what": what, "sha256": b.sha256, "features": len(b.manifest["profile"]["features"]["names"])}
        out["settings"] = {"rollup_interval_s": args.rollup_interval_s, "drift_every_s": args.drift_every_s,
                           "synchronous": "FULL", "rollouts_enabled": True, "writer_process": not args.in_process}
        try:
            broker = Mosquitto(folder / "mosquitto").start()
            try:
                if "throughput" not in skip:
                    out["throughput"] = throughput(broker, folder, gen, bundle, key, args)
                if "lag" not in skip:
                    out["lag"] = lag(broker, folder, gen, bundle, key, args)
            finally:
                broker.stop()
            if "horizon" not in skip:
                out["horizon"] = horizon(folder, gen, args.horizon_devices)
        except BenchFailed as exc:
            print(json.dumps({"error": str(exc), "machine": out["machine"]}, indent=2))
            return 1
    out["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
