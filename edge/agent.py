"""The agent: the one place where the device's parts are wired together.

    source ─► reader thread ─► Pipeline (gate → model → decision → window) ─► spool ─► flusher ─► link
                                   ▲ models                                                       │
                               Lifecycle ◄── DesiredState ◄── control thread ◄── desired, model/{sha} ┘

Threads: the caller's thread runs the pipeline; a reader thread pulls audio (so ``stop``
is prompt even when stdin or a microphone blocks); paho's network thread only queues
incoming messages and handles acknowledgements; a control thread installs and activates
bundles; the flusher sends spooled messages. ``boot`` is a random 63-bit id drawn at each
start (a reflashed device with its state wiped never repeats one), and window ``seq``
continues from the spool, so ``(device, boot, seq)`` is unique.
"""
from __future__ import annotations

import collections
import logging
import queue
import sys
import threading
import time
from importlib import metadata
from typing import Callable

from edge.capture import CaptureConfig
from edge.config import AgentConfig
from edge.decisions import JsonLinesSink
from edge.desired import DesiredState
from edge.feedback import FeedbackFile
from edge.flusher import SpoolFlusher
from edge.lifecycle import Lifecycle, ProbationPolicy
from edge.link import Link, LinkSettings
from edge.pipeline import Pipeline
from edge.releases import ReleaseGuard
from edge.samples import SampleChannel
from edge.sandbox import SmokeLimits
from edge.sources import AudioSource, RealtimePacer, open_source
from edge.spool import Spool
from shared import keys as keyring
from shared.bundle import load_bundle
from shared.codec import encode
from shared.errors import HarkenError, ProtocolError
from shared.messages import decode
from shared.receipts import ref, refs_of
from shared.topics import Topics

log = logging.getLogger(__name__)

_END = object()
SHUTDOWN_DRAIN_S = 5.0
HELD_WINDOWS = 1000  # windows kept in memory while the spool cannot take them (a full disk)
HELD_RETRY_S = 1.0


def agent_version() -> str:
    try:
        return metadata.version("harken")
    except metadata.PackageNotFoundError:
        return "0.0.0+local"


class Agent:
    """``Agent(config).run()`` until the source ends or ``stop()``; ``stop`` is thread-safe."""

    def __init__(self, config: AgentConfig, *, source: AudioSource | None = None, loader: Callable | None = None,
                 clock: Callable[[], float] = time.time, drain_s: float = SHUTDOWN_DRAIN_S):
        self.config = config
        self.clock = clock
        self.drain_s = drain_s
        self.version = agent_version()
        self.topics = Topics(config.topic_prefix)
        self._source = source
        self._stop = threading.Event()
        self._control: queue.Queue = queue.Queue()
        self._event_lock = threading.Lock()
        self._event_seq = 0
        self.windows_out = 0
        self._held: collections.deque = collections.deque()  # (topic, payload, seq) the spool refused
        self._held_dropped = 0
        self._held_retry_t = 0.0
        state = config.state_path
        state.mkdir(parents=True, exist_ok=True)
        self.spool = Spool(state / "spool.db", config.spool_max_bytes)
        policy = ProbationPolicy(utterances=config.probation_utterances, seconds=config.probation_s,
                                 latency_budget_ms=config.latency_budget_ms, max_error_rate=config.max_error_rate)
        trusted = [keyring.load_public_key(p) for p in config.trust_keys]
        releases = ReleaseGuard(state, [keyring.load_public_key(p) for p in config.release_keys],
                                required=config.require_release, clock=clock)
        extra = {"loader": loader} if loader is not None else {}
        smoke = SmokeLimits(memory_mb=config.smoke_memory_mb, timeout_s=config.smoke_timeout_s)
        self.lifecycle = Lifecycle(state, trusted, policy, report=self._report, clock=clock, smoke_limits=smoke,
                                   releases=releases, **extra)
        self.link: Link | None = None
        self.flusher: SpoolFlusher | None = None
        self.samples = SampleChannel(config, self.topics, clock) if config.samples_upload else None
        self.pipeline: Pipeline | None = None
        self.desired = DesiredState(self.lifecycle, device_id=config.device_id, request_bundle=self._want_bundle,
                                    release_bundle=self._drop_bundle, set_automation=self._set_automation,
                                    report=self._report, fetch_timeout_s=config.fetch_timeout_s,
                                    apply_config=self._apply_config)
        self._feedback: FeedbackFile | None = None
        self._threads: list[threading.Thread] = []
        self._started = False

    # -- lifecycle of the process ---------------------------------------------------------
    def start(self) -> None:
        """Load models, connect (in the background), build the pipeline. ``run`` calls it."""
        if self._started:
            return
        self._started = True
        cfg = self.config
        self.lifecycle.start()
        self.lifecycle.enforce_releases()
        self._report("agent_started", detail={"version": self.version})
        if cfg.bundle:
            self._install_configured_bundle()
        active = self.lifecycle.active
        gate = cfg.gate_config(active.manifest.get("gate") if active is not None else None)
        automation = self.lifecycle.slots.automation or cfg.automation
        self.pipeline = Pipeline(
            device=cfg.device_id, boot=self.lifecycle.boot, agent_version=self.version, gate_config=gate,
            window_s=cfg.window_s, automation=automation, models=self.lifecycle, sink=self._make_sink(),
            on_window=self._on_window, on_inference=self.lifecycle.record_inference,
            start_seq=self.spool.meta("last_seq", -1) + 1, clock=self.clock, capture=self._capture_config(),
            audit_rate=cfg.audit_rate, sampler=self.samples.uploader if self.samples else None,
            on_feedback=lambda fb: self._report("feedback", model=fb.get("model") or "", detail=fb))
        self._feedback = FeedbackFile(cfg.feedback_path) if cfg.feedback_path else None
        if cfg.broker_url:
            self._start_link()
        self._spawn(self._control_loop, "control")
        log.info("agent %s started: device %s, boot %d, model %s, automation %s, broker %s", self.version,
                 cfg.device_id, self.lifecycle.boot, (self.lifecycle.slots.active or "none")[:12], automation,
                 cfg.broker_url or "none (offline)")

    def _install_configured_bundle(self) -> None:
        """The ``bundle`` setting bootstraps a device; with a broker, desired state then rules."""
        lc = self.lifecycle
        try:
            sha = load_bundle(self.config.bundle, lc.public_keys).sha256
            if sha == lc.slots.active and lc.active is not None:
                return
            lc.install_file(self.config.bundle)
            if lc.active is None or not self.config.broker_url:
                lc.activate(sha)
            else:
                log.info("configured bundle %s installed; model %s stays active (the desired state decides)",
                         sha[:12], lc.slots.active[:12])
        except HarkenError as exc:
            log.error("the configured bundle %s cannot run: %s", self.config.bundle, exc)

    def _start_link(self) -> None:
        cfg = self.config
        will = {"kind": "state", "device": cfg.device_id, "online": False, "t": round(self.clock(), 3)}
        self.link = Link(LinkSettings.from_config(cfg), will_topic=self.topics.state(cfg.device_id),
                         will_message=will, on_message=self._on_message,
                         on_connected=self._on_connected)
        self.flusher = SpoolFlusher(self.spool, self.link.publish, self.link.connected, rate_per_s=cfg.flush_rate,
                                    max_inflight=cfg.spool_inflight, resend_after_s=cfg.resend_unconfirmed_s).start()
        if self.samples is not None:
            self.samples.start(self.link)
        self.link.subscribe(self.topics.desired(cfg.device_id), self.topics.receipt(cfg.device_id),
                            self.topics.revocations())
        self.link.start()

    def run(self) -> None:
        """Process audio until the source ends or ``stop()``; then flush and shut down."""
        self.start()
        source = self._source or self._open_source()
        chunks: queue.Queue = queue.Queue(maxsize=64)
        self._spawn(lambda: self._read(source, chunks), "reader")
        failure: BaseException | None = None
        try:
            while not self._stop.is_set():
                try:
                    item = chunks.get(timeout=0.5)
                except queue.Empty:
                    self._idle()
                    continue
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    failure = item
                    break
                self.pipeline.feed(item)
                self._idle()
        finally:
            source.close()
            self.shutdown()
        if failure is not None:
            raise failure

    def stop(self) -> None:
        """Ask ``run`` to finish (from any thread or a signal handler)."""
        self._stop.set()

    @property
    def reader_blocked(self) -> bool:
        """The audio reader is still stuck in a blocking read (stdin, a device) after ``run``."""
        readers = [t for t in self._threads if t.name == "reader"]
        for t in readers:
            t.join(0.5)
        return any(t.is_alive() for t in readers)

    def shutdown(self) -> None:
        """Flush the last window, send what the broker can take, say offline, release everything."""
        if self.pipeline is not None:
            self.pipeline.flush()
        self._stop.set()
        for t in self._threads:
            if t.name != "reader":
                t.join(5.0)
        deadline = time.monotonic() + self.drain_s
        if self.link is not None and self.drain_s > 0:  # the broker may be reconnecting: give it the grace period
            self.flusher.wait_drained(self.drain_s)
        if self.samples is not None:  # clips get what the windows left of it
            self.samples.close(max(0.0, deadline - time.monotonic()) if self.link else 0.0)
        if self.link is not None:
            self._say_offline()
            self.flusher.stop()
            self.link.stop()
        if self._feedback is not None:
            self._feedback.close()
        if self.pipeline is not None and self.pipeline.sink is not None:
            self.pipeline.sink.close()
        if self._held:
            self._spool_held()
        if self._held:
            log.error("%d window(s) the spool could not take (is the disk full?) are lost at shutdown", len(self._held))
        self.spool.close()
        log.info("agent stopped: %d windows, spool backlog %d", self.windows_out, len(self.spool))

    # -- audio ---------------------------------------------------------------------------
    def _open_source(self) -> AudioSource:
        source = open_source(self.config.source, self.config.chunk_samples)
        return RealtimePacer(source) if self.config.realtime else source

    def _read(self, source: AudioSource, out: queue.Queue) -> None:
        try:
            for chunk in source.chunks():
                while not self._stop.is_set():
                    try:
                        out.put(chunk, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            out.put(_END)
        except BaseException as exc:  # handed to the pipeline thread, which raises it
            out.put(exc)

    def _idle(self) -> None:
        if self._feedback is not None:
            self._feedback.pump(self.pipeline.feedback)
        self.lifecycle.tick()
        if self._held and time.monotonic() >= self._held_retry_t:
            self._spool_held()

    # -- outputs -------------------------------------------------------------------------
    def _make_sink(self):
        target = self.config.decisions
        if not target:
            return None
        return JsonLinesSink(sys.stdout if target == "-" else target)

    def _capture_config(self) -> CaptureConfig | None:
        cfg = self.config
        if not cfg.capture_dir:
            return None
        return CaptureConfig(directory=cfg.capture_dir, max_per_hour=cfg.capture_max_per_hour,
                             burst=cfg.capture_burst, max_confidence=cfg.capture_max_confidence)

    def _on_window(self, message: dict) -> None:
        self.lifecycle.tick()
        message["software"]["spool_dropped_windows"] = self._take_dropped()
        if self.link is None:
            try:
                self.spool.set_meta("last_seq", message["seq"])
            except HarkenError as exc:
                log.error("window %d: cannot record its seq: %s", message["seq"], exc)
        else:
            self._hold((self.topics.stats(self.config.device_id), encode(message), message["seq"]))
            self._spool_held()
        self.windows_out += 1

    def _hold(self, item: tuple[str, bytes, int]) -> None:
        """Queue a window for the spool; memory holds at most HELD_WINDOWS (the oldest go, counted)."""
        if not self.spool.fits(item[0], item[1]):
            log.error("window %d (%d bytes) can never fit the spool; raise spool_max_bytes", item[2], len(item[1]))
            self._held_dropped += 1
            return
        if len(self._held) >= HELD_WINDOWS:
            self._held.popleft()
            self._held_dropped += 1
        self._held.append(item)

    def _take_dropped(self) -> int:
        """Windows dropped since the last window: by the spool's bound, or from memory while it was full."""
        held, self._held_dropped = self._held_dropped, 0
        try:
            return held + self.spool.take_dropped()
        except HarkenError:  # the spool keeps its count: reported with a later window
            return held

    def _spool_held(self) -> None:
        """Move windows waiting in memory into the spool, oldest first; on failure keep them and retry."""
        moved = 0
        while self._held:
            topic, payload, seq = self._held[0]
            try:
                self.spool.put(topic, payload, meta={"last_seq": seq}, ref=ref("stats", self.lifecycle.boot, seq))
            except HarkenError as exc:
                if self._held_retry_t == 0.0:
                    log.error("window %d could not be spooled: %s; %d window(s) wait in memory (at most %d) and "
                              "are retried every %.0f s", seq, exc, len(self._held), HELD_WINDOWS, HELD_RETRY_S)
                self._held_retry_t = time.monotonic() + HELD_RETRY_S
                break
            self._held.popleft()
            moved += 1
        else:
            if self._held_retry_t:
                log.info("the spool takes windows again")
            self._held_retry_t = 0.0
        if moved and self.flusher is not None:
            self.flusher.notify()

    def _report(self, event: str, *, model: str | None = None, reason: str | None = None,
                detail: dict | None = None) -> None:
        """One lifecycle event: logged, spooled for the broker, and the state republished."""
        with self._event_lock:
            seq = self._event_seq
            self._event_seq += 1
        msg = {"kind": "event", "device": self.config.device_id, "boot": self.lifecycle.boot, "seq": seq,
               "t": round(self.clock(), 3), "event": event}
        for key, value in (("model", model), ("reason", reason), ("detail", detail)):
            if value is not None:
                msg[key] = value
        log.info("event %s%s%s", event, f" model {model[:12]}" if model else "", f" ({reason})" if reason else "")
        if self.config.broker_url:  # spooled even before the link exists (events of the start)
            try:
                self.spool.put(self.topics.event(self.config.device_id), encode(msg),
                               ref=ref("event", self.lifecycle.boot, seq))
            except (HarkenError, ValueError) as exc:
                log.error("event %s could not be spooled: %s", event, exc)
            if self.flusher is not None:
                self.flusher.notify()
            self._publish_state()

    # -- state and control ---------------------------------------------------------------
    def state_message(self, online: bool = True) -> dict:
        msg = {"kind": "state", "device": self.config.device_id, "online": online, "t": round(self.clock(), 3),
               "agent_version": self.version, **self.lifecycle.state_fields(),
               "spool_backlog": len(self.spool), "spool_dropped_windows": self.spool.dropped_total}
        if self.pipeline is not None:
            msg["automation"] = self.pipeline.automation
        if self.samples is not None:
            msg["samples"] = self.samples.state()
        return msg

    def _publish_state(self) -> None:
        if self.link is not None and self.link.connected.is_set():
            self.link.publish(self.topics.state(self.config.device_id), encode(self.state_message()), retain=True)

    def _say_offline(self) -> None:
        if not self.link.connected.is_set():
            return
        done = threading.Event()
        self.link.publish(self.topics.state(self.config.device_id), encode(self.state_message(online=False)),
                          retain=True, on_ack=lambda ok, reason: done.set())
        done.wait(2.0)

    def _on_connected(self, session_present: bool) -> None:
        self._publish_state()
        self.flusher.on_connected()
        if self.samples is not None:
            self.samples.flusher.on_connected()

    def _apply_config(self, config: dict) -> None:
        """The desired state's ``config``; today only field samples read it (ignored unless opted in)."""
        if self.samples is not None:
            self.samples.uploader.apply_config(config)

    def _set_automation(self, level: str) -> None:
        self.pipeline.set_automation(level)
        self._publish_state()

    def _want_bundle(self, sha: str) -> None:
        self.link.subscribe(self.topics.model(sha), self.topics.model(sha) + "/+")

    def _drop_bundle(self, sha: str) -> None:
        self.link.unsubscribe(self.topics.model(sha), self.topics.model(sha) + "/+")

    def _control_loop(self) -> None:
        was_connected = False
        while not self._stop.is_set():
            applied = self.lifecycle.slots.desired_rev
            was_connected = self._check_fetch_deadlines(was_connected)
            try:
                topic, payload = self._control.get(timeout=0.5)
                self._handle_control(topic, payload)
            except queue.Empty:
                pass
            if self.lifecycle.slots.desired_rev != applied:
                self._publish_state()  # the cloud sees at once which desired state was applied

    def _handle_control(self, topic: str, payload: bytes) -> None:
        try:
            parsed = self.topics.parse(topic)
            if parsed.kind == "desired":
                self.desired.on_desired(payload)
            elif parsed.kind == "model":
                self.desired.on_model(parsed.sha256, payload)
            elif parsed.kind == "chunk":
                self.desired.on_chunk(parsed.sha256, parsed.chunk, payload)
            elif parsed.kind == "revocations":
                self._on_revocations(payload)
        except ProtocolError as exc:
            log.warning("ignoring a message on %s: %s", topic, exc)
        except Exception:  # keep the device running; the event log says what failed
            log.exception("handling %s failed", topic)

    def _check_fetch_deadlines(self, was_connected: bool) -> bool:
        """Stalled bundle downloads fail (connected time only); returns whether the link is up."""
        connected = self.link is not None and self.link.connected.is_set()
        try:
            if connected and not was_connected:
                self.desired.restart_deadlines()  # time offline is not a stalled download
            if connected:
                self.desired.tick()
        except Exception:  # keep the control thread alive; the event log says what failed
            log.exception("checking bundle downloads failed")
        return connected

    def _on_message(self, topic: str, payload: bytes) -> None:
        """From the network thread: receipts are handled at once (also while shutting down, when the
        spool drains), everything else is queued for the control thread."""
        if topic != self.topics.receipt(self.config.device_id):
            self._control.put((topic, payload))
            return
        try:
            message = decode(payload, "receipt")
        except ProtocolError as exc:
            log.warning("ignoring a receipt: %s", exc)
            return
        if message["device"] == self.config.device_id:
            self.flusher.confirm(refs_of(message))

    def _on_revocations(self, payload: bytes) -> None:
        """A signed revocation list (retained): merge it, then stop any revoked model."""
        if not payload:
            return  # the retained list was cleared: revocations already merged stay
        try:
            self.lifecycle.releases.accept_revocations(payload)
        except HarkenError as exc:
            log.error("ignoring a revocation list: %s", exc)
            self._report("desired_rejected", reason=getattr(exc, "code", "bad_revocations"),
                         detail={"error": str(exc)[:300]})
            return
        self.lifecycle.enforce_releases()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
