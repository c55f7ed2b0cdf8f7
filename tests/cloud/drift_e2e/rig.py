"""The drift acceptance rig: real agents → private mosquitto → real collector (SQLite, drift on).

Time is audio time. Each agent's clock is ``t0 + 0.5 s + the audio it has heard``, so window k
of every device starts half a second into drift step k (one window = one step = one rollup
bucket = ``WINDOW_S`` of audio) and no test waits for wall-clock time. The windows are all
ingested first; then the test steps the collector's maintenance (``Collector.tick(now)``:
rollups, then the drift job) through ``now = t0 + k · WINDOW_S + settle``: the evaluation at
step k sees windows 0 … k − 1 only, exactly as a collector running through those minutes would.
Each device learns its baseline over its first ``WARMUP_S`` (shortened for the test, a time
setting; the false-alarm budget is the default). Alerts go out as the collector sends them: MQTT
``{prefix}/alert/{id}`` (a ``Watcher`` records them) and the webhook (``Webhook``).
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cloud.collector import Collector
from cloud.drift.alerts import Alert
from cloud.registry import Registry
from cloud.store import open_store
from edge.agent import Agent
from edge.config import load_agent_config
from shared import keys
from shared.messages import decode
from shared.topics import Topics
from tests.cloud.conftest import collector_config, wait_until
from tests.edge.watcher import Watcher

WINDOW_S = 60.0  # audio per stats window, per drift step and per rollup bucket: ~30 utterances
LONG_STEPS = 24  # the drift look-back, in steps
WARMUP_STEPS = 10  # a device's baseline: its first 10 minutes of audio (8+ blocks of 30 utterances)
SETTLE_S = 30.0  # the collector's default drift_settle_s
PREFIX = "harken/v1"


class AudioClock:
    """``t0 + 0.5 + the audio the agent's pipeline has consumed``."""

    def __init__(self, t0: float):
        self.t0 = t0
        self.agent: Agent | None = None

    def __call__(self) -> float:
        pipeline = self.agent.pipeline if self.agent is not None else None
        return self.t0 + 0.5 + (pipeline.position_s if pipeline is not None else 0.0)


def run_agents(rooms: dict, *, broker_url: str, bundle: Path, public_key: Path, release_key: Path, state_root: Path,
               t0: float, window_s: float = WINDOW_S) -> dict[str, Agent]:
    """Run one real agent per room (device id → audio source) to the end of its audio, in parallel."""
    agents, errors = {}, {}
    for device, room in rooms.items():
        clock = AudioClock(t0)
        config = load_agent_config(env={}, overrides={
            "device_id": device, "broker_url": broker_url, "state_dir": str(state_root / device),
            "bundle": str(bundle), "trust_keys": [str(public_key)], "release_keys": [str(release_key)],
            "window_s": window_s, "decisions": "",
            "keepalive_s": 5, "reconnect_min_s": 0.05, "reconnect_max_s": 0.5,
            "latency_budget_ms": 60000.0})  # a busy shared machine must not fail the probation
        clock.agent = agents[device] = Agent(config, source=room, clock=clock)

    def run(device: str) -> None:
        try:
            agents[device].run()
        except Exception as exc:  # reported below, in the test's thread
            errors[device] = exc

    threads = [threading.Thread(target=run, args=(d,), name=f"agent-{d}") for d in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, f"agents failed: {errors}"
    return agents


class Webhook:
    """A tiny HTTP receiver on a free loopback port: records every JSON body POSTed to it."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.cond = threading.Condition()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.cond:
                    hook.bodies.append(json.loads(body))
                    hook.cond.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/harken-alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)
        self.thread.start()

    def wait_for(self, predicate, timeout_s: float = 10.0) -> list[dict]:
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.bodies), timeout_s), \
                f"the webhook did not get the expected alerts; got {self.bodies}"
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Rig:
    """One private broker, one collector (restartable) on one SQLite file, a webhook, a watcher."""

    broker_url: str
    broker_port: int
    root: Path
    bundle: Path
    public_key: Path
    t0: float
    window_s: float = WINDOW_S  # audio per window = one drift step
    long_steps: int = LONG_STEPS
    release_key: Path | None = None  # release.pub of the bundle's release
    collector: Collector | None = None
    webhook: Webhook = field(default_factory=Webhook)
    watcher: Watcher | None = None
    timings: dict = field(default_factory=dict)

    def __post_init__(self):
        self.db_url = f"sqlite:///{self.root / 'harken.db'}"
        self.store = open_store(self.db_url)  # the test's own connection (reads, acknowledgements)
        Registry(self.store, self.root / "registry", [keys.load_public_key(self.public_key)]).register(self.bundle)
        self.watcher = Watcher(self.broker_port, [Topics(PREFIX).filter("alert")])
        self.start_collector()

    def config(self):
        return collector_config(self.broker_url, self.db_url, client_id=f"collector-{uuid.uuid4().hex[:6]}",
                                drift_enabled=True, drift_step_s=self.window_s, drift_long_steps=self.long_steps,
                                rollup_bucket_s=int(self.window_s), drift_warmup_s=WARMUP_STEPS * self.window_s,
                                drift_settle_s=SETTLE_S, registry_dir=str(self.root / "registry"),
                                public_keys=[str(self.public_key)], alert_webhook_url=self.webhook.url,
                                alert_webhook_timeout_s=2.0)

    def start_collector(self) -> None:
        self.collector = Collector(self.config())
        self.collector.start()

    def restart_collector(self) -> None:
        self.collector.stop()
        self.start_collector()

    def play(self, rooms: dict, state_root: Path) -> dict[str, Agent]:
        """Run the devices' agents over their rooms; wait until the store holds all their windows."""
        t = time.perf_counter()
        agents = run_agents(rooms, broker_url=self.broker_url, bundle=self.bundle, public_key=self.public_key,
                            release_key=self.release_key, state_root=state_root, t0=self.t0, window_s=self.window_s)
        self.timings["agents_s"] = round(time.perf_counter() - t, 2)
        sent = sum(a.windows_out for a in agents.values())
        assert wait_until(lambda: len(self.windows()) >= sent, timeout_s=30), \
            f"the collector stored {len(self.windows())} of {sent} windows"
        return agents

    def windows(self) -> list[dict]:
        return list(self.store.windows(devices=None, since=self.t0 - 1, until=self.t0 + 1e6))

    def tick(self, step: int) -> list[Alert]:
        """The collector's maintenance once drift step ``step`` - 1 has settled; all alerts after it."""
        self.collector.tick(now=self.t0 + step * self.window_s + SETTLE_S)
        return self.alerts()

    def sweep(self, steps: range) -> dict[tuple[str, str], tuple[int, Alert]]:
        """Tick through ``steps``: (cohort, kind) → (the step that opened its alert, the alert then)."""
        seen: dict[tuple[str, str], tuple[int, Alert]] = {}
        for k in steps:
            for alert in self.tick(k):
                seen.setdefault(alert.key, (k, alert))
        return seen

    def alerts(self) -> list[Alert]:
        return [Alert.from_row(r) for r in self.store.alerts()]

    def mqtt_alerts(self) -> list[dict]:
        return [decode(p, "alert") for p in self.watcher.on("") if p]

    def close(self) -> None:
        if self.collector is not None:
            self.collector.stop()
        self.watcher.close()
        self.webhook.close()
        self.store.close()
