"""Simulated devices for the rollout benchmark: many paho clients on one select loop per process.

``spawn(port, ids, procs, mode, arg)`` starts ``procs`` processes that share the devices out.
mode ``bundle``: each device reassembles the bundle ``arg['sha']`` with the agent's own
``BundleFetch`` and verifies it with ``load_bundle``, and notes when ``bench/raw`` arrives.
mode ``obey``: each device follows its retained desired state and reports its state (retained),
as an agent whose previous model is still warm would. ``snapshot`` asks every process for the
times noted so far; ``stop`` ends them.
"""
from __future__ import annotations

import multiprocessing as mp
import selectors
import time

PREFIX = "harken/v1"


class Swarm:
    """Many paho clients on one select loop (paho's external-loop API)."""

    def __init__(self, port: int, ids: list[str], on_message):
        import paho.mqtt.client as mqtt

        self.sel = selectors.DefaultSelector()
        self.clients = {}
        self.subscribed = 0
        for dev in ids:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{dev}", protocol=mqtt.MQTTv5)
            c.user_data_set(dev)
            c.on_message = on_message
            c.on_subscribe = self._on_subscribe
            c.connect("127.0.0.1", port, keepalive=120)
            self.sel.register(c.socket(), selectors.EVENT_READ, c)
            self.clients[dev] = c

    def _on_subscribe(self, *args) -> None:
        self.subscribed += 1

    def pump(self, timeout: float = 0.02) -> None:
        for key, _ in self.sel.select(timeout):
            key.data.loop_read()
        for c in self.clients.values():
            if c.want_write():
                c.loop_write()
            c.loop_misc()


def device_worker(port: int, ids: list[str], mode: str, arg: dict, conn) -> None:
    """mode ``bundle``: reassemble + verify ``arg['sha']``, note raw receipts; ``obey``: follow desired."""
    from edge.fetch import BundleFetch
    from shared import keys
    from shared.bundle import load_bundle
    from shared.codec import encode
    from shared.messages import decode
    from shared.topics import Topics

    topics = Topics(PREFIX)
    done: dict[str, dict] = {d: {} for d in ids}
    fetch = {d: BundleFetch(arg["sha"]) for d in ids} if mode == "bundle" else {}
    pub_keys = [keys.load_public_key(arg["public_key"])] if mode == "bundle" else []
    slots = {d: {"active": arg.get("active"), "previous": None, "rev": 0} for d in ids}

    def state(dev: str) -> bytes:
        s = slots[dev]
        return encode({"kind": "state", "device": dev, "online": True, "t": time.time(), "automation": "full",
                       "health": "ok", "desired_rev": s["rev"],
                       "models": {"active": s["active"], "previous": s["previous"], "shadow": None}})

    def on_message(client, dev, msg) -> None:
        now = time.time()
        if msg.topic == "bench/raw":
            done[dev]["raw"] = now
            return
        if mode == "obey":
            m = decode(msg.payload, expect="desired")
            s = slots[dev]
            if m["rev"] <= s["rev"]:
                return
            if m.get("active") and m["active"] != s["active"]:
                s["previous"], s["active"] = s["active"], m["active"]
                done[dev].setdefault("switched", []).append((m["active"], now))
            s["rev"] = m["rev"]
            client.publish(topics.state(dev), state(dev), qos=1, retain=True)
            return
        parsed = topics.parse(msg.topic)
        f = fetch[dev]
        f.update_model(msg.payload) if parsed.kind == "model" else f.update_chunk(parsed.chunk, msg.payload)
        if f.complete and "verified" not in done[dev]:
            ok = load_bundle(f.data, pub_keys).sha256 == arg["sha"]
            done[dev]["verified"] = time.time() if ok else -1.0

    swarm = Swarm(port, ids, on_message)
    for dev, c in swarm.clients.items():
        if mode == "bundle":
            c.subscribe([(topics.model(arg["sha"]), 1), (topics.model(arg["sha"]) + "/+", 1), ("bench/raw", 1)])
        else:
            c.subscribe(topics.desired(dev), qos=1)
    while swarm.subscribed < len(ids):
        swarm.pump()
    if mode == "obey":
        for dev, c in swarm.clients.items():
            c.publish(topics.state(dev), state(dev), qos=1, retain=True)
    conn.send("ready")
    while True:
        if conn.poll():
            if conn.recv() == "stop":
                break
            conn.send(done)  # a snapshot of what happened so far
        swarm.pump()
    for c in swarm.clients.values():
        c.disconnect()
        c.loop_write()


def spawn(port: int, ids: list[str], procs: int, mode: str, arg: dict):
    ctx = mp.get_context("fork")
    workers = []
    for i in range(procs):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=device_worker, args=(port, ids[i::procs], mode, arg, child), daemon=True)
        p.start()
        workers.append((p, parent))
    for _, parent in workers:
        if not parent.poll(120) or parent.recv() != "ready":
            raise RuntimeError("a device process did not get ready")
    return workers


def snapshot(workers) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for _, parent in workers:
        parent.send("report")
    for _, parent in workers:
        out.update(parent.recv())
    return out


def stop(workers) -> None:
    for p, parent in workers:
        parent.send("stop")
    for p, _ in workers:
        p.join(10)


def until_all(workers, key: str, timeout_s: float) -> dict[str, dict]:
    """Snapshots until every device has ``key`` (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        snap = snapshot(workers)
        if all(key in v for v in snap.values()) or time.monotonic() > deadline:
            return snap
        time.sleep(0.05)


def wait(predicate, timeout_s: float, step_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


