"""Benchmark bundle delivery and fleet-wide rollback on loopback; prints one JSON object.

    .venv/bin/python scripts/bench_rollout.py [--devices 1000] [--procs 4] [--bundle-kb 300]
                                              [--tick-s 0.25]

A private mosquitto on a free loopback port, and ``--devices`` simulated devices: paho
clients driven by one select loop per process (``--procs`` processes).

delivery   a signed bundle of ``--bundle-kb`` KB published by ``cloud.delivery`` (chunked,
           retained, QoS 1); every device reassembles it with the agent's own ``BundleFetch``
           and verifies it with ``load_bundle`` (sha256 and Ed25519). Timed from the publish to
           the last verified copy. Baselines in the same run: the same bytes as one bare QoS-1
           message to one subscriber, and to all devices (receipt only).
rollback   the devices obey desired states and report their state through a real collector
           into SQLite. A blue-green rollout switches them all to the new model; then failing
           windows (error rate over the gate) are committed to the store, and the controller,
           ticked every ``--tick-s``, rolls back. Timed from that commit to the last device
           reporting the previous model, in the store and on the devices. Baseline: a desired
           state published straight to every device, timed to the last state report in the store.
           The collector's own rollout controller is off (``rollouts_enabled = false``): the
           bench's controller is the one acting, and two would contend for the lease.

No figures from a run that did not do what it measures: the bench prints an error and exits 1
unless every device verified the bundle, the rollout switched every device forward, and it then
ended ``rolled_back`` with every device back on the previous model, in the store and on the devices.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from sim_devices import PREFIX, snapshot, spawn, stop, until_all, wait  # noqa: E402


class BenchFailed(Exception):
    """The run did not reach the state it measures: no figures."""


# ---------------------------------------------------------------------------- broker

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 100000\nmax_inflight_messages 100\nlog_dest none\n")
    proc = subprocess.Popen([shutil.which("mosquitto") or "mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


# ---------------------------------------------------------------------------- artifacts

def make_bundle(private_key, name: str, version: str, size_kb: int) -> bytes:
    """A signed bundle of about ``size_kb`` KB: a real ONNX graph carrying that many weight bytes."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from shared.bundle import build_bundle

    n = max(1, size_kb * 1024 // 4)
    pad = numpy_helper.from_array(np.random.default_rng(len(version)).standard_normal(n).astype(np.float32), "pad")
    w = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Mul", ["audio", "w"], ["out"])], "bench",
                              [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["N", 16000])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 16000])], [w, pad])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    manifest = {"name": name, "version": version, "labels": ["yes", "no"], "sample_rate": 16000,
                "input_samples": 16000, "placement": "centre", "opset": {"": 17},
                "io": {"input": "audio", "label": "label", "probabilities": "probabilities", "features": "features"}}
    return build_bundle(model.SerializeToString(), manifest, private_key)


def failing_window(device: str, seq: int, model: str, t: float, errors: int) -> dict:
    """A window of 100 inferences with ``errors`` failures (0: a healthy one)."""
    from shared.histogram import CONFIDENCE_EDGES, LATENCY_MS_EDGES, LEVEL_DBFS_EDGES, SNR_DB_EDGES, UTTERANCE_MS_EDGES

    def hist(edges, at: int = 3):
        return [100 if i == at else 0 for i in range(len(edges) + 1)]

    return {"kind": "window", "v": "1.0", "device": device, "boot": 1, "seq": seq, "t_start": t, "duration_s": 10.0,
            "audio_start_s": 10.0 * seq, "agent_version": "bench", "model": model, "automation": "full",
            "software": {"frames": 1000, "voiced_frames": 500, "dropped_frames": 0, "invalid_frames": 0,
                         "utterances": 100, "inferences": 100, "errors": errors, "cpu_s": 0.1, "rss_mb": 50.0,
                         "latency_ms": {"model": hist(LATENCY_MS_EDGES, 8)}},
            "input": {"utterance_ms": hist(UTTERANCE_MS_EDGES), "level_dbfs": hist(LEVEL_DBFS_EDGES),
                      "snr_db": hist(SNR_DB_EDGES), "clipped_utterances": 0, "features": []},
            "output": {"labels": {"yes": 50, "no": 50}, "confidence": hist(CONFIDENCE_EDGES), "no_answer": 5,
                       "deferred": 0, "acted": 95, "suggested": 0},
            "feedback": {"pairs": []}}


class OneSubscriber:
    def __init__(self, port: int, topic: str):
        import paho.mqtt.client as mqtt

        self.got = threading.Event()
        self.t = 0.0
        self.ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"one-{uuid.uuid4().hex[:6]}",
                             protocol=mqtt.MQTTv5)
        self.c.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = self._msg
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.ready.wait(10)

    def _msg(self, *a) -> None:
        self.t = time.time()
        self.got.set()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


# ---------------------------------------------------------------------------- measurements

def bench_delivery(port: int, n: int, procs: int, size_kb: int, chunk_kb: int, priv, pub_path) -> dict:
    from cloud.delivery import Delivery, MqttPublisher
    from shared import keys
    from shared.bundle import load_bundle

    bundle = load_bundle(make_bundle(priv, "bench", "2", size_kb), [keys.load_public_key(pub_path)])
    ids = [f"dev-{i:04d}" for i in range(n)]
    workers = spawn(port, ids, procs, "bundle", {"sha": bundle.sha256, "public_key": str(pub_path)})
    publisher = MqttPublisher(f"mqtt://127.0.0.1:{port}", timeout_s=120)
    try:
        one = OneSubscriber(port, "bench/one")
        singles = []
        for _ in range(5):
            one.got.clear()
            t0 = time.time()
            publisher.publish_all([("bench/one", bundle.raw, False)])
            one.got.wait(10)
            singles.append(one.t - t0)
        one.close()
        t0 = time.time()
        publisher.publish_all([("bench/raw", bundle.raw, False)])
        raw = until_all(workers, "raw", 120)
        raw_s = max(v["raw"] for v in raw.values()) - t0
        delivery = Delivery(publisher, None, chunk_bytes=chunk_kb * 1024)
        t0 = time.time()
        messages = delivery.publish_bundle(bundle)
        acked_s = time.time() - t0
        snap = until_all(workers, "verified", 300)
        times = sorted(v["verified"] - t0 for v in snap.values() if v.get("verified", -1) > 0)
    finally:
        stop(workers)
        publisher.close()
    if len(times) != n:
        raise BenchFailed(f"delivery: {len(times)} of {n} devices verified the bundle")
    return {"devices": n, "processes": procs, "bundle_bytes": len(bundle.raw), "messages": messages,
            "chunk_bytes": chunk_kb * 1024, "verified": len(times), "publish_acked_s": round(acked_s, 4),
            "all_verified_s": round(times[-1], 4) if times else None,
            "median_verified_s": round(statistics.median(times), 4) if times else None,
            "baseline_bare_one_subscriber_s": round(statistics.median(singles), 4),
            "baseline_bare_fanout_all_devices_s": round(raw_s, 4)}


def _all_on(store, model: str, n: int) -> bool:
    devs = [d for d in store.devices() if d.get("state")]
    return len(devs) >= n and all((d["state"].get("models") or {}).get("active") == model for d in devs)


def bench_rollback(port: int, n: int, procs: int, size_kb: int, tick_s: float, workdir: Path, priv, pub_path) -> dict:
    from cloud.collector import Collector
    from cloud.config import load_collector_config
    from cloud.delivery import Delivery, MqttPublisher, desired_message
    from cloud.registry import Registry
    from cloud.rollout.controller import Controller
    from cloud.rollout.repo import SqlDesiredRevs
    from cloud.rollout.service import RolloutService
    from cloud.store import open_store
    from shared import keys
    from shared.codec import encode
    from shared.topics import Topics

    db = f"sqlite:///{workdir / 'bench.db'}"
    store = open_store(db)
    registry = Registry(store, workdir / "registry", [keys.load_public_key(pub_path)])
    old, _ = registry.register(make_bundle(priv, "bench", "1", 50))
    new, _ = registry.register(make_bundle(priv, "bench", "2", size_kb))
    cfg = load_collector_config(env={}, overrides={"broker_url": f"mqtt://127.0.0.1:{port}", "db_url": db,
                                                   "client_id": "bench-collector", "batch_ms": 20.0,
                                                   "rollup_interval_s": 3600.0, "http_port": 0,
                                                   "rollouts_enabled": False,  # the bench's controller acts
                                                   "registry_dir": str(workdir / "registry"),
                                                   "public_keys": [str(pub_path)],
                                                   "samples_dir": str(workdir / "samples")})
    collector = Collector(cfg)
    collector.start()
    ids = [f"dev-{i:04d}" for i in range(n)]
    workers = spawn(port, ids, procs, "obey", {"active": old.sha256})
    publisher = MqttPublisher(f"mqtt://127.0.0.1:{port}", timeout_s=120)
    try:
        if not wait(lambda: _all_on(store, old.sha256, n), 120, 0.1):
            raise RuntimeError("the devices' first state reports did not reach the store")
        topics = Topics(PREFIX)
        t0 = time.time()
        publisher.publish_all([(topics.desired(d), encode(desired_message(d, 1, active=old.sha256)), True)
                               for d in ids])
        if not wait(lambda: all((d["state"] or {}).get("desired_rev", 0) >= 1 for d in store.devices()), 120, 0.02):
            raise BenchFailed("baseline: not every device reported the desired state it was sent")
        baseline_s = time.time() - t0

        # The gates compare the new model with the old one's windows from before the switch (the
        # historical control of a 100 % stage): without these they could never decide.
        healthy = [failing_window(d, k, old.sha256, time.time() - 60 + 10 * k, errors=0) for d in ids[:20]
                   for k in range(3)]
        store.insert_windows(healthy)
        svc = RolloutService(store, registry)
        r = svc.start("bench:2", "fleet", "blue-green", bake="1h", policy={"deadline_s": 300.0})
        ctl = Controller(store, Delivery(publisher, SqlDesiredRevs(store), topics), registry, holder="bench")
        t0 = time.time()
        while not _all_on(store, new.sha256, n) and time.time() - t0 < 300:
            ctl.tick()
            time.sleep(tick_s)
        forward_s = time.time() - t0
        if not _all_on(store, new.sha256, n):
            raise BenchFailed(f"rollout {r.id} did not switch every device forward in 300 s "
                              f"(status {svc.get(r.id).status}): nothing to roll back")
        ctl.tick()
        windows = [failing_window(d, 1000 + k, new.sha256, time.time(), errors=30) for d in ids[:20] for k in range(3)]
        t_fail = time.time()
        store.insert_windows(windows)
        decided = tick_cost = None
        while not _all_on(store, old.sha256, n) and time.time() - t_fail < 300:
            t_tick = time.time()
            ctl.tick()
            if decided is None and svc.get(r.id).status == "rolled_back":
                decided, tick_cost = time.time() - t_fail, time.time() - t_tick
            time.sleep(tick_s)
        back_s = time.time() - t_fail
        final = svc.get(r.id)
        all_back_in_store = _all_on(store, old.sha256, n)
        snap = snapshot(workers)
        device_back = [t for v in snap.values() for sha, t in v.get("switched", []) if sha == old.sha256]
    finally:
        stop(workers)
        publisher.close()
        collector.stop()
    if final.status != "rolled_back" or not all_back_in_store or len(device_back) != n:
        raise BenchFailed(f"rollback: rollout {r.id} ended {final.status!r} ({final.reason[:120]}); devices back on "
                          f"the previous model: {len(device_back)} of {n} (in the store: {all_back_in_store})")
    return {"devices": n, "tick_s": tick_s, "status": final.status, "reason": final.reason[:160],
            "first_failing_evidence_to_all_previous_in_store_s": round(back_s, 3),
            "first_failing_evidence_to_all_previous_on_devices_s": round(max(device_back) - t_fail, 3),
            "evidence_to_rollback_tick_done_s": None if decided is None else round(decided, 3),
            "rollback_tick_s": None if tick_cost is None else round(tick_cost, 3),
            "forward_switch_all_devices_s": round(forward_s, 3),
            "baseline_bare_desired_to_all_states_in_store_s": round(baseline_s, 3)}


def versions() -> dict:
    from importlib.metadata import version

    out = {"python": platform.python_version(), "paho-mqtt": version("paho-mqtt")}
    try:
        out["mosquitto"] = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.split("\n")[0]
    except OSError:
        out["mosquitto"] = None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--bundle-kb", type=int, default=300)
    ap.add_argument("--chunk-kb", type=int, default=256)
    ap.add_argument("--tick-s", type=float, default=0.25)
    ap.add_argument("--only", choices=["delivery", "rollback"])
    args = ap.parse_args()
    from shared import keys

    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
           "versions": versions()}
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        workdir = Path(tmp)
        priv_path, pub_path = keys.generate_keypair(workdir / "keys")
        priv = keys.load_private_key(priv_path)
        broker, port = start_broker(workdir)
        try:
            if args.only in (None, "delivery"):
                out["delivery"] = bench_delivery(port, args.devices, args.procs, args.bundle_kb, args.chunk_kb,
                                                 priv, pub_path)
            if args.only in (None, "rollback"):
                out["rollback"] = bench_rollback(port, args.devices, args.procs, args.bundle_kb, args.tick_s,
                                                 workdir, priv, pub_path)
        except BenchFailed as exc:
            print(json.dumps({"error": str(exc), **out}, indent=2))
            return 1
        finally:
            broker.terminate()
            broker.wait(10)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
