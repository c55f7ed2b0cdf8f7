"""One simulated device: a real ``edge.agent.Agent`` fed by a simulated microphone.

Everything but the microphone is the device's own code: the agent's config checks, model
lifecycle (install, verify, smoke test, probation, rollback), desired state, spool, flusher,
MQTT link, pipeline and feedback reader. The simulator adds three things: the audio source
(``SimSource`` paced by ``FleetPacer``), a person answering some decisions
(``Person``, a decision sink), and ``SharedModels``, a loader that lets many agents in one
process share one onnxruntime session per bundle (each agent still verifies and smoke-tests
every bundle it installs; only the session's weights are shared).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.agent import Agent
from edge.config import load_agent_config
from edge.model import LoadedModel
from edge.sim.audio import SimSource, Timeline
from edge.sim.pacing import FleetPacer
from edge.sim.person import FeedbackFileWriter, Person
from edge.sim.truth import TRUTH_FILE, TruthLog
from edge.sim.world import World
from edge.spool import Spool
from edge.store import SlotsFile
from shared.audio import SAMPLE_RATE
from shared.bundle import Bundle
from shared.errors import HarkenError, ProtocolError
from shared.messages import decode

if TYPE_CHECKING:
    from edge.sim.fleet import FleetPlan

log = logging.getLogger(__name__)


def device_ids(count: int, first: int = 1) -> list[str]:
    """``dev-0001`` ...: the names ``harken broker init --devices N`` gives its devices."""
    width = max(4, len(str(first + count - 1)))
    return [f"dev-{i:0{width}d}" for i in range(first, first + count)]


def agent_config(plan: "FleetPlan", device_id: str, password: str, state_dir: Path):
    """The agent configuration of one simulated device (the plan's agent config file < these)."""
    overrides = {"device_id": device_id, "state_dir": str(state_dir), "decisions": "",
                 "topic_prefix": plan.prefix, "chunk_samples": plan.chunk_samples}
    if plan.broker_url:
        overrides.update(broker_url=plan.broker_url, username=device_id if password else "",
                         password=password, tls_ca=plan.tls_ca)
    if plan.trust_keys:
        overrides["trust_keys"] = list(plan.trust_keys)
    if plan.release_keys:
        overrides["release_keys"] = list(plan.release_keys)
    if plan.answers:
        overrides["feedback_path"] = str(state_dir / "feedback.jsonl")
    if plan.window_s:
        overrides["window_s"] = plan.window_s
    if plan.model and SlotsFile(state_dir / "slots.json").read().active is None:
        overrides["bundle"] = plan.model  # first boot only: later boots keep what rollouts installed
    return load_agent_config(plan.agent_config or None, env={}, overrides=overrides)


class SharedModels:
    """An agent ``loader``: one onnxruntime session per bundle, shared by the agents of a process.

    Each call returns its own ``LoadedModel`` (its own input buffer; onnxruntime sessions may
    run from several threads), so an agent's predictions never mix with another's.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._first: dict[str, LoadedModel] = {}

    def __call__(self, bundle: Bundle) -> LoadedModel:
        key = bundle.bundle_sha256
        with self._lock:
            first = self._first.get(key)
            if first is None:
                first = self._first[key] = LoadedModel.from_bundle(bundle)
        return LoadedModel(first.bundle, first.session, first.input_name, first.output_names, first.input_samples)

    def __len__(self) -> int:
        return len(self._first)


class SimDevice:
    """Build with everything the device needs; ``start()`` runs it in a thread until the
    stream ends or ``stop()``; ``status()`` any time, ``result()`` after ``join()``."""

    def __init__(self, plan: "FleetPlan", index: int, device_id: str, *, world: World, loader: SharedModels,
                 password: str = ""):
        self.plan, self.index, self.device_id = plan, index, device_id
        self.targeted = index in world.targets
        self.speakers = world.speakers(index)
        self.state_dir = Path(plan.state_root) / device_id
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config = agent_config(plan, device_id, password, self.state_dir)
        self.timeline = Timeline()
        stream, channel = world.device(index, self.timeline)
        self.source = SimSource(stream, channel, chunk_samples=self.config.chunk_samples,
                                duration_s=plan.duration_s, name=f"sim:{device_id}")
        self.person = None
        if plan.answers:
            self.person = Person(self.timeline, FeedbackFileWriter(self.state_dir / "feedback.jsonl"),
                                 plan.feedback_rate, np.random.default_rng([plan.seed, index, 2]),
                                 labels=world.pool.labels, audit_rate=plan.audit_answer_rate)
        # the person and the truth log read decisions (the truth log hands each on to the person)
        self.sink = self.person
        if plan.truth_log:
            self.sink = TruthLog(self.timeline, self.state_dir / TRUTH_FILE, world.pool.labels, inner=self.person)
        self.pacer = FleetPacer(self.source, plan.speed, consumed_s=self._consumed_s,
                                max_ahead_s=2.0 * self.config.chunk_samples / SAMPLE_RATE)
        self.agent = Agent(self.config, source=self.pacer, loader=loader)
        self.first_seq = None
        self.error = ""
        self.thread: threading.Thread | None = None
        self.started_t = self.ended_t = 0.0

    def _consumed_s(self) -> float:
        pipeline = self.agent.pipeline
        return pipeline.position_s if pipeline is not None else 0.0

    # -- running ---------------------------------------------------------------------------
    def start(self) -> None:
        self.started_t = time.monotonic()
        self.agent.start()
        self.first_seq = self.agent.pipeline.seq
        if self.sink is not None:
            self.agent.pipeline.sink = self.sink  # the config's sink is none: the person (and truth log) read
        self.thread = threading.Thread(target=self._run, name=f"agent-{self.device_id}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.agent.run()
        except Exception as exc:  # one device failing must not stop the fleet; the result says why
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("device %s stopped with an error", self.device_id)
        finally:
            if self.sink is not None:
                self.sink.close()
            self.ended_t = time.monotonic()

    def stop(self) -> None:
        self.agent.stop()

    def join(self, timeout_s: float | None = None) -> bool:
        if self.thread is not None:
            self.thread.join(timeout_s)
            return not self.thread.is_alive()
        return True

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    # -- reporting ---------------------------------------------------------------------------
    def status(self) -> dict:
        agent = self.agent
        link, flusher, pipeline = agent.link, agent.flusher, agent.pipeline
        return {"up": self.running and (link is None or link.connected.is_set()), "running": self.running,
                "windows": agent.windows_out, "acked": flusher.acked if flusher else 0,
                "spooled": len(agent.spool), "audio_s": pipeline.position_s if pipeline else 0.0,
                "utterances": pipeline.stats["utterances"] if pipeline else 0,
                "feedback": self.person.answered if self.person else 0, "error": bool(self.error)}

    def result(self) -> dict:
        """What this device did in this run (call after it stopped)."""
        pipeline = self.agent.pipeline
        stats = pipeline.stats if pipeline else {}
        out = {"device": self.device_id, "boot": self.agent.lifecycle.boot, "targeted": self.targeted,
               "speakers": self.speakers,
               "first_seq": self.first_seq, "next_seq": pipeline.seq if pipeline else None,
               "windows": self.agent.windows_out, "unsent_seqs": self.unsent_seqs(),
               "audio_s": round(pipeline.position_s, 3) if pipeline else 0.0,
               "utterances": stats.get("utterances", 0), "decisions": stats.get("decisions", 0),
               "feedback_accepted": stats.get("feedback_accepted", 0),
               "model": self.agent.lifecycle.slots.active, "wall_s": round(self.ended_t - self.started_t, 3)}
        if self.person is not None:
            out["feedback_sent"] = self.person.answered
        if self.error:
            out["error"] = self.error
        return out

    def unsent_seqs(self) -> list[list[int]]:
        """``[boot, seq]`` of the windows still in the spool (sent on the device's next start)."""
        spool = Spool(self.state_dir / "spool.db", self.config.spool_max_bytes)
        try:
            rows = spool.peek(len(spool) + 1)
        finally:
            spool.close()
        out = []
        for row in rows:
            if row.topic.endswith("/stats"):
                try:
                    msg = decode(row.payload, "window")
                except ProtocolError:
                    continue
                out.append([msg["boot"], msg["seq"]])
        return out


def start_device(device: SimDevice) -> str:
    """Start a device; returns '' or the reason it could not start."""
    try:
        device.start()
        return ""
    except HarkenError as exc:
        device.error = str(exc)
        log.error("device %s cannot start: %s", device.device_id, exc)
        return device.error
