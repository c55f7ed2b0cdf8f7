"""The serve process's device: an ``Agent`` whose audio comes from HTTP requests.

    request ─► admission (≤ http_max_pending) ─► decode ─► pipeline lock ─► new stream: gate → model
                                                                              (+ shadow) → decisions
    ticker (every window_s of wall clock) ─► close the window ─► spool ─► link ─► collector

It is the agent, not a copy of it: ``edge.agent.Agent`` loads the bundles through the device's
model lifecycle (signature check, smoke test in a limited child, model store, probation),
builds the pipeline, and streams windows, events and state over its MQTT link and spool under
``device_id``; desired state from the collector applies as on any device. What differs:

- each request is its own recording: ``Pipeline.new_stream`` gives it a fresh VAD gate, so its
  decisions depend on its audio only (and match ``harken agent replay`` of the same file);
- requests take turns on the one pipeline (one gate, one session per model, as on a device:
  ``LoadedModel.predict`` is not re-entrant); at most ``http_max_pending`` are admitted, the
  rest are refused at once with 503 and ``Retry-After``;
- windows close on wall-clock time, not audio time (the pipeline's own audio-time window is
  set to its maximum), so an idle server sends nothing and a busy one one window per window_s.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time

import numpy as np

from edge.agent import Agent
from edge.decisions import Decision, DecisionSink, action_for
from edge.serve.config import ServeConfig
from edge.serve.inputs import RequestError, decode
from edge.serve.metrics import ServeMetrics
from shared.audio import SAMPLE_RATE
from shared.errors import ConfigError, HarkenError
from shared.messages import AUTOMATION_LEVELS

log = logging.getLogger(__name__)

CHUNK_SAMPLES = 4096  # fed per step; the request's deadline is checked between steps
PIPELINE_WINDOW_S = 3600.0  # the pipeline's audio-time window: the ticker closes windows first
TICK_GRACE_S = 0.25  # a request waits at least this long for the turn (the ticker's flush holds it briefly)


class RequestSink(DecisionSink):
    """Collects the decisions of the request running now; forwards each to ``downstream`` too."""

    def __init__(self, downstream: DecisionSink | None = None):
        self.downstream = downstream
        self.decisions: list[Decision] = []

    def emit(self, decision: Decision) -> None:
        self.decisions.append(decision)
        if self.downstream is not None:
            self.downstream.emit(decision)

    def take(self) -> list[Decision]:
        out, self.decisions = self.decisions, []
        return out

    def close(self) -> None:
        if self.downstream is not None:
            self.downstream.close()


class Admission:
    """At most ``limit`` requests inside at once; ``enter`` never waits (full means refuse)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.peak = 0
        self._n = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return self._n

    def enter(self) -> bool:
        with self._lock:
            if self._n >= self.limit:
                return False
            self._n += 1
            self.peak = max(self.peak, self._n)
            return True

    def leave(self) -> None:
        with self._lock:
            self._n -= 1


class Service:
    """``start()``, then ``predict(body, fmt, deadline)`` from any thread; ``stop()`` flushes and leaves."""

    def __init__(self, config: ServeConfig, *, clock=time.time):
        self.config = config
        self.token = config.token
        self.agent = Agent(dataclasses.replace(config, window_s=PIPELINE_WINDOW_S), clock=clock)
        self.metrics = ServeMetrics(self._gauges)
        self.admission = Admission(config.http_max_pending)
        self._turn = threading.Lock()  # one request at a time through the pipeline
        self._sink = RequestSink()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # -- process lifecycle -------------------------------------------------------------
    def start(self) -> "Service":
        agent = self.agent
        agent.start()
        self._sink.downstream = agent.pipeline.sink
        agent.pipeline.sink = self._sink
        if self.config.shadow:
            self._start_shadow(self.config.shadow)
        if agent.lifecycle.active is None and not self.config.broker_url:
            agent.shutdown()
            raise ConfigError(f"no model can run (last error: {agent.lifecycle.slots.last_error or 'none'}); "
                              "check --bundle and --trust-keys (the log says why a bundle was refused)")
        self._ticker = threading.Thread(target=self._tick_loop, name="serve-windows", daemon=True)
        self._ticker.start()
        log.info("serving device %s: model %s, shadow %s, automation %s", self.config.device_id,
                 (self.models().get("active") or "none")[:12], (self.models().get("shadow") or "none")[:12],
                 agent.pipeline.automation)
        return self

    def _start_shadow(self, path: str) -> None:
        lifecycle = self.agent.lifecycle
        try:
            sha = lifecycle.install_file(path)
            lifecycle.set_shadow(sha)
        except HarkenError as exc:
            self.agent.shutdown()
            raise ConfigError(f"the shadow bundle {path} cannot run: {exc}") from exc

    def stop(self) -> None:
        """Close the last window, send what the broker takes, say offline."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(5.0)
        with self._turn:
            self.agent.shutdown()

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.config.window_s):
            with self._turn:
                try:
                    self.agent.pipeline.flush()  # emits the window if it holds anything
                    self.agent.lifecycle.tick()
                except Exception:  # keep closing windows; the log says what failed
                    log.exception("closing a window failed")

    # -- state ---------------------------------------------------------------------------
    def models(self) -> dict:
        lc = self.agent.lifecycle
        return {"active": getattr(lc.active, "sha256", None), "shadow": getattr(lc.shadow, "sha256", None)}

    def readiness(self) -> tuple[bool, str]:
        """(ready, why not): a model is loaded, and the shadow too when one was asked for."""
        lc = self.agent.lifecycle
        if self.agent.pipeline is None or lc.active is None:
            return False, "no model is loaded yet"
        if self.config.shadow and lc.shadow is None:
            return False, "the shadow model is not loaded"
        return True, ""

    def metrics_text(self) -> str:
        return self.metrics.text()

    def _gauges(self) -> dict:
        """What ``/metrics`` reads from the running service at scrape time (``ServeMetrics``)."""
        pipeline = self.agent.pipeline
        return {"in_flight": self.admission.in_flight, "max_pending": self.admission.limit,
                "models": self.models(), "pipeline": pipeline.stats if pipeline else {},
                "spool_backlog": len(self.agent.spool)}

    # -- requests ------------------------------------------------------------------------
    def feedback(self, utterance: str, label: str | None, confirm: bool) -> bool:
        """A person's verdict on a served decision, credited as on a device; False when unusable."""
        return self.agent.pipeline.feedback(utterance, label, confirm=confirm)

    def predict(self, body: bytes, fmt: str, deadline: float) -> dict:
        """Decode and run one request (blocking); ``deadline`` is on ``time.monotonic``."""
        samples = decode(body, fmt, self.config.http_max_audio_s)
        t_wait = time.perf_counter()
        # at least a short wait: the window ticker holds the turn for a flush of a few ms, which
        # must not turn a request whose budget is (nearly) spent into "busy" instead of "timeout"
        if not self._turn.acquire(timeout=max(TICK_GRACE_S, deadline - time.monotonic())):
            raise RequestError(503, "busy", f"the model stayed busy for the request's whole time budget "
                               f"({self.config.http_timeout_s:g} s); retry later or send fewer requests at once",
                               headers={"Retry-After": str(self.config.http_retry_after_s)})
        t_run = time.perf_counter()
        try:
            decisions, active, shadow, timed_out = self._run(samples, deadline)
        finally:
            self._turn.release()
        if timed_out:
            raise RequestError(504, "timeout", f"processing ran past the request's time budget "
                               f"({self.config.http_timeout_s:g} s); send shorter audio or raise http_timeout_s")
        self.metrics.served(len(samples) / SAMPLE_RATE, len(decisions))
        answer = self._answer(samples, decisions, active, shadow)
        answer.update(queued_ms=round((t_run - t_wait) * 1000.0, 3),
                      processing_ms=round((time.perf_counter() - t_run) * 1000.0, 3))
        return answer

    def _run(self, samples: np.ndarray, deadline: float):
        pipeline = self.agent.pipeline
        active, shadow = self.agent.lifecycle.active, self.agent.lifecycle.shadow
        if active is None:
            raise RequestError(503, "no_model", "no model is loaded (yet): see /readyz; the device is waiting "
                               "for a bundle", headers={"Retry-After": str(self.config.http_retry_after_s)})
        pipeline.new_stream()
        self._sink.take()
        timed_out = False
        for i in range(0, len(samples), CHUNK_SAMPLES):
            if time.monotonic() > deadline:
                timed_out = True
                break
            pipeline.feed(samples[i:i + CHUNK_SAMPLES])
        pipeline.flush(close_window=False)
        return self._sink.take(), active, shadow, timed_out

    def _answer(self, samples: np.ndarray, decisions: list[Decision], active, shadow) -> dict:
        thresholds = {m.sha256: m.threshold for m in (active, shadow) if m is not None}
        return {
            "device": self.config.device_id,
            "model": {"sha256": active.sha256, "name": active.manifest.get("name"),
                      "version": active.manifest.get("version")},
            "shadow_model": None if shadow is None else shadow.sha256,
            "automation": self.agent.pipeline.automation,
            "audio_s": round(len(samples) / SAMPLE_RATE, 4),
            "utterances": [_utterance(d, thresholds.get(d.model, active.threshold)) for d in decisions],
        }


def _utterance(d: Decision, threshold: float) -> dict:
    no_answer = d.confidence < threshold
    return {"utterance": d.utterance, "start_s": round(d.audio_start_s, 4), "end_s": round(d.audio_end_s, 4),
            "label": d.label, "confidence": d.confidence, "no_answer": no_answer, "action": d.action,
            "actions": {level: action_for(level, no_answer) for level in AUTOMATION_LEVELS},
            "audit": d.audit, "model": d.model, "shadow_label": d.shadow_label,
            "shadow_confidence": d.shadow_confidence}

