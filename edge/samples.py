"""Field samples: the opt-in upload of captured utterances to the collector.

Nothing happens unless the device opted in (``samples_upload``, off by default): then, and only
then, the agent keeps a ring of its most recent utterances in memory (``samples_ring_bytes``,
16-bit) and uploads, as 16 kHz mono WAV files,

- ``low_confidence``: utterances the active model was unsure about (confidence below
  ``samples_max_confidence``, else the bundle's threshold);
- ``audit``: the utterances the audit sample flagged (``Decision.audit``, ``audit_rate``);
- ``alert``: on the collector's request (desired state ``config.sample_request``: an id, an alert
  id, a time range on this device's clock and a clip cap), the utterances of that range still in
  the ring and those still to come before its end.

The collector may switch an opted-in device off and on again (desired state
``config.samples``: false / true); it can never switch on a device that did not opt in. Every
clip counts against ``samples_max_bytes_per_hour`` (a sliding hour) and is refused over
``samples_max_clip_bytes``; an utterance goes out once, under the first reason it meets
(alert, then audit, then low confidence). A clip's messages (``shared.samples``) go to their own
spool in one transaction, so a broker outage loses none and a full spool refuses whole clips.
The remote switch, the open requests and the ids of handled requests survive a restart
(``samples.json`` in the state directory); the ring does not.
"""
from __future__ import annotations

import collections
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edge.flusher import SpoolFlusher
from edge.spool import Spool
from shared import samples as wire
from shared.audio import SAMPLE_RATE, to_int16, wav_bytes
from shared.errors import HarkenError
from shared.files import atomic_write
from shared.topics import Topics

log = logging.getLogger(__name__)

HOUR_S = 3600.0
DONE_KEPT = 200  # handled request ids remembered (a re-sent desired state does not re-run one)
STATE_FILE = "samples.json"
STAT_NAMES = ("offered", "queued", "queued_bytes", "low_confidence", "audit", "alert", "limited", "too_large",
              "spool_full", "requests")


@dataclass(frozen=True)
class SampleSettings:
    """The agent's ``samples_*`` settings (``edge.config.AgentConfig`` documents each)."""

    opt_in: bool = False
    low_confidence: bool = True
    audit: bool = True
    max_confidence: float | None = None
    max_bytes_per_hour: int = 4 * 1024 * 1024
    max_clip_bytes: int = 256 * 1024
    ring_bytes: int = 2 * 1024 * 1024
    request_max_clips: int = 50
    chunk_bytes: int = wire.DEFAULT_CHUNK_BYTES

    @classmethod
    def from_config(cls, cfg) -> "SampleSettings":
        return cls(opt_in=cfg.samples_upload, low_confidence=cfg.samples_low_confidence, audit=cfg.samples_audit,
                   max_confidence=cfg.samples_max_confidence, max_bytes_per_hour=cfg.samples_max_bytes_per_hour,
                   max_clip_bytes=cfg.samples_max_clip_bytes, ring_bytes=cfg.samples_ring_bytes,
                   request_max_clips=cfg.samples_request_max_clips)


@dataclass
class _Utterance:
    uid: str
    t: float  # this device's clock when the utterance was offered
    pcm: np.ndarray  # int16
    label: str
    confidence: float
    model: str
    sent: bool = False


@dataclass
class _Request:
    id: str
    alert: str
    from_t: float
    to_t: float
    left: int  # clips it may still take
    sent: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, raw, cap: int) -> "_Request":
        if not isinstance(raw, dict):
            raise ValueError("sample_request must be an object {id, alert, from_t, to_t, max_clips}")
        try:
            req = cls(str(raw["id"]), str(raw.get("alert") or ""), float(raw["from_t"]), float(raw["to_t"]),
                      min(int(raw.get("max_clips", cap)), cap))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"sample_request {str(raw)[:120]!r} is malformed ({exc})") from None
        if not req.id or req.to_t < req.from_t or req.left < 0:
            raise ValueError(f"sample_request {req.id!r}: needs an id, from_t <= to_t and max_clips >= 0")
        return req

    def covers(self, t: float) -> bool:
        return self.left > 0 and self.from_t <= t <= self.to_t


class SampleUploader:
    """Decides which utterances leave the device and hands their messages to ``put`` (the spool).

    ``put(messages)`` must store a clip's messages all or none (``Spool.put_many``) and raise
    ``HarkenError`` when it cannot. ``offer`` runs on the audio thread, ``apply_config`` on the
    control thread; one lock guards the state.
    """

    def __init__(self, settings: SampleSettings, *, device: str, topics: Topics,
                 put: Callable[[list[tuple[str, bytes]]], object], state_dir: str | Path | None = None,
                 clock: Callable[[], float] = time.time):
        self.settings, self.device, self.topics = settings, device, topics
        self._put, self.clock = put, clock
        self._state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None
        self._lock = threading.Lock()
        self._ring: collections.deque[_Utterance] = collections.deque()
        self._ring_bytes = 0
        self._sent_log: collections.deque[tuple[float, int]] = collections.deque()  # (t, bytes) of the last hour
        self._remote: bool | None = None  # the collector's switch (None: never set)
        self._requests: list[_Request] = []
        self._done: list[str] = []
        self.stats = dict.fromkeys(STAT_NAMES, 0)
        self._load()

    @property
    def enabled(self) -> bool:
        """Opted in, and not switched off by the collector."""
        return self.settings.opt_in and self._remote is not False

    # -- the audio thread ------------------------------------------------------------------
    def offer(self, uid: str, samples: np.ndarray, *, label: str, confidence: float, threshold: float, model: str,
              audit: bool = False) -> str | None:
        """One utterance the model judged; returns the reason it was queued for upload (None: not)."""
        if not self.enabled:
            return None
        with self._lock:
            self.stats["offered"] += 1
            u = _Utterance(uid, self.clock(), to_int16(samples), label, float(confidence), model)
            request = next((r for r in self._requests if r.covers(u.t)), None)
            limit = self.settings.max_confidence if self.settings.max_confidence is not None else threshold
            reason = ("alert" if request is not None else "audit" if audit and self.settings.audit
                      else "low_confidence" if self.settings.low_confidence and u.confidence < limit else None)
            if reason is not None:
                self._send(u, reason, request)
            if self._requests and self._close_finished():
                self._save()
            self._remember(u)
            return reason if u.sent else None

    # -- the control thread ----------------------------------------------------------------
    def apply_config(self, config: dict) -> None:
        """The desired state's ``config``: ``samples`` (the switch) and ``sample_request``."""
        with self._lock:
            if "samples" in config and isinstance(config["samples"], bool) and config["samples"] != self._remote:
                self._remote = config["samples"]
                log.info("the collector switched sample uploads %s%s", "on" if self._remote else "off",
                         "" if self.settings.opt_in else " (ignored: this device did not opt in)")
                if not self.enabled:
                    self._forget()
            if config.get("sample_request") is not None:
                self._start_request(config["sample_request"])
            self._save()

    def _start_request(self, raw) -> None:
        try:
            req = _Request.parse(raw, self.settings.request_max_clips)
        except ValueError as exc:
            log.warning("ignoring a sample request: %s", exc)
            return
        if req.id in self._done or any(r.id == req.id for r in self._requests):
            return  # handled already (a desired state sent again)
        self.stats["requests"] += 1
        if not self.enabled:
            self._done.append(req.id)  # switched off: the request is answered with nothing
            return
        for u in self._ring:
            if not u.sent and req.covers(u.t):  # covers: also while the request may take more clips
                self._send(u, "alert", req)
        log.info("sample request %s (alert %s): %d clip(s) from the ring", req.id, req.alert or "-", len(req.sent))
        self._requests.append(req)
        self._close_finished()

    def _close_finished(self) -> bool:
        """Requests that are used up or past their end are done; True if one closed."""
        now = self.clock()
        finished = [r for r in self._requests if r.left <= 0 or r.to_t < now]
        for r in finished:
            self._requests.remove(r)
            self._done.append(r.id)
        del self._done[:-DONE_KEPT]
        return bool(finished)

    # -- sending -----------------------------------------------------------------------------
    def _send(self, u: _Utterance, reason: str, request: _Request | None) -> bool:
        wav = wav_bytes(u.pcm)
        if len(wav) > self.settings.max_clip_bytes:
            self.stats["too_large"] += 1
            return False
        now = self.clock()
        while self._sent_log and self._sent_log[0][0] <= now - HOUR_S:
            self._sent_log.popleft()
        if sum(n for _, n in self._sent_log) + len(wav) > self.settings.max_bytes_per_hour:
            self.stats["limited"] += 1
            return False
        meta = {"reason": reason, "captured_t": u.t, "duration_ms": 1000.0 * len(u.pcm) / SAMPLE_RATE,
                "chunk_bytes": self.settings.chunk_bytes, "utterance": u.uid, "model": u.model, "label": u.label,
                "confidence": round(u.confidence, 6), "alert": (request.alert or None) if request else None,
                "request": request.id if request else None}
        try:
            self._put(wire.messages(self.topics, self.device, wav, meta))
        except HarkenError as exc:
            self.stats["spool_full"] += 1
            log.debug("sample %s not queued: %s", u.uid, exc)
            return False
        self._sent_log.append((now, len(wav)))
        u.sent = True
        self.stats["queued"] += 1
        self.stats["queued_bytes"] += len(wav)
        self.stats[reason] += 1
        if request is not None:
            request.left -= 1
            request.sent.append(u.uid)
        return True

    def _remember(self, u: _Utterance) -> None:
        self._ring.append(u)
        self._ring_bytes += u.pcm.nbytes
        while self._ring and self._ring_bytes > self.settings.ring_bytes:
            self._ring_bytes -= self._ring.popleft().pcm.nbytes

    def _forget(self) -> None:
        """Switched off: drop the audio kept in memory and the open requests."""
        self._ring.clear()
        self._ring_bytes = 0
        self._done.extend(r.id for r in self._requests)
        self._requests.clear()

    # -- persistence ---------------------------------------------------------------------------
    def _load(self) -> None:
        if self._state_path is None or not self._state_path.exists():
            return
        try:
            state = json.loads(self._state_path.read_text())
            self._remote = state.get("remote")
            self._done = [str(i) for i in state.get("done", [])][-DONE_KEPT:]
            self._requests = [_Request.parse(r, self.settings.request_max_clips) for r in state.get("open", [])]
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("%s is unreadable (%s); sample requests start afresh", self._state_path, exc)

    def _save(self) -> None:
        if self._state_path is None:
            return
        state = {"remote": self._remote, "done": self._done, "open": [
            {"id": r.id, "alert": r.alert, "from_t": r.from_t, "to_t": r.to_t, "max_clips": r.left}
            for r in self._requests]}
        try:
            atomic_write(self._state_path, json.dumps(state, sort_keys=True).encode())
        except OSError as exc:
            log.warning("cannot save %s (%s); the collector's switch holds until a restart", self._state_path, exc)


class SampleChannel:
    """What an opted-in agent runs for samples: the uploader, its own spool and flusher.

    Clips wait in ``samples.db`` (not the windows' spool: a backlog of audio never pushes
    windows out, and a full sample spool refuses whole clips instead of dropping old ones).
    """

    INFLIGHT = 4  # sample messages sent and not yet acknowledged, at most

    def __init__(self, cfg, topics: Topics, clock: Callable[[], float] = time.time):
        self.spool = Spool(cfg.state_path / "samples.db", cfg.samples_spool_max_bytes)
        self.flush_rate = cfg.samples_flush_rate
        self.flusher = None
        self.uploader = SampleUploader(SampleSettings.from_config(cfg), device=cfg.device_id, topics=topics,
                                       put=self._put, state_dir=cfg.state_path, clock=clock)

    def _put(self, messages: list[tuple[str, bytes]]) -> None:
        self.spool.put_many(messages)
        if self.flusher is not None:
            self.flusher.notify()

    def start(self, link) -> None:
        """Send from the spool over ``link`` (an ``edge.link.Link``) while it is connected."""
        self.flusher = SpoolFlusher(self.spool, link.publish, link.connected, rate_per_s=self.flush_rate,
                                    max_inflight=self.INFLIGHT).start()

    def state(self) -> dict:
        """For the reported state: whether uploads are on, and what waits for the broker."""
        return {"enabled": self.uploader.enabled, "backlog": len(self.spool), "queued": self.uploader.stats["queued"]}

    def close(self, drain_s: float) -> None:
        if self.flusher is not None:
            if drain_s > 0:
                self.flusher.wait_drained(drain_s)
            self.flusher.stop()
        self.spool.close()
