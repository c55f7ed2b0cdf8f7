"""Ingest's pure half: one (topic, payload) becomes a validated row of a ``Batch``, or a ``Reject``.

Fast and free of I/O, so the fuzz tests drive it without a broker; ``cloud.ingest.Ingest``
feeds it from MQTT and commits what it produces. A payload is inflated once; a window is
checked by the compiled schema (``cloud.window_schema``) and, only when that does not accept
it, by the full validator (``shared.messages``), which decides every refusal and its code.
A window the compiled schema accepts is parsed once: its row holds only its top-level fields
(a ``WindowHeader``, all the store reads) beside its JSON text, which is stored as it came.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from cloud.store import Batch, Received, Reject
from cloud.store.base import SamplePart
from cloud.window_schema import FastWindows, Undecided, WindowHeader
from shared.codec import dumps, parse_json, unwrap
from shared.errors import ProtocolError
from shared.messages import validate
from shared.receipts import boot_seq
from shared.samples import MAX_CHUNK_BYTES, MAX_SAMPLE_BYTES
from shared.topics import Topics

log = logging.getLogger(__name__)

KIND_OF_TOPIC = {"stats": "window", "state": "state", "event": "event", "sample": "sample"}
TEXT_FIELDS = {"window": ("model", "shadow_model", "agent_version"), "event": ("model", "reason"),
               "state": (), "sample": ("utterance", "model", "label", "alert", "request")}


class RejectLog:
    """Logs rejected messages at WARNING once per code per interval, with how many there were."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._pending: dict[str, int] = {}

    def note(self, reject: Reject) -> None:
        code = reject.code
        self._pending[code] = self._pending.get(code, 0) + 1
        now = self._clock()
        if code in self._last and now - self._last[code] < self.interval_s:
            return
        n, self._pending[code] = self._pending[code], 0
        self._last[code] = now
        log.warning("rejected %d message(s) with code %s; latest on %s: %s; first bytes %s", n, code,
                    reject.topic, reject.detail, reject.head[:32].hex())


def _text_ok(value) -> bool:
    if value is None:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def _receipt_ref(parsed, payload: bytes) -> tuple[str, str, int, int] | None:
    """(device, kind, boot, seq) of a refused window or event whose payload names them: its receipt
    says it was dealt with, or the device would send it for ever."""
    if parsed is None or parsed.kind not in ("stats", "event"):
        return None
    pair = boot_seq(payload)
    return None if pair is None else (parsed.device, parsed.kind, *pair)


class IngestHandler:
    """Topic + payload → a validated row in a ``Batch``, or a ``Reject`` in it."""

    def __init__(self, topics: Topics, *, reject_log_interval_s: float = 60.0,
                 sample_max_clip_bytes: int = MAX_SAMPLE_BYTES, sample_quota_bytes: int | None = None):
        self.topics = topics
        self.sample_max_clip_bytes = sample_max_clip_bytes
        self.sample_quota_bytes = sample_quota_bytes  # what a device may send per hour (the store checks it)
        self.reject_log = RejectLog(reject_log_interval_s)
        self.fast_windows = FastWindows()
        self.undecided = 0  # windows the fast path left to the full validator
        self.accepted: dict[str, int] = {}
        self.rejected: dict[str, int] = {}

    def add(self, batch: Batch, topic: str, payload: bytes, received_t: float, retained: bool = False) -> str | None:
        """Add one message to ``batch``; returns the reject code, or None if it was accepted.

        A retained message (the broker replaying a device's last state at subscribe) says
        nothing about when the device was last heard from, so it counts as seen at its own ``t``
        (never later than now). Windows are not checked against any device clock: the store
        keeps them exactly once by ``(device, boot, seq)`` whatever their ``t_start``.
        """
        parsed = None
        try:
            parsed = self.topics.parse(topic)
            if parsed.kind == "sample_chunk":
                return self._add_chunk(batch, parsed, topic, payload, received_t)
            kind, message, body = self._check(parsed, topic, payload)
        except ProtocolError as exc:
            reject = Reject.of(received_t, topic, exc.code, exc.detail, payload, _receipt_ref(parsed, payload))
            batch.rejects.append(reject)
            self.rejected[exc.code] = self.rejected.get(exc.code, 0) + 1
            self.reject_log.note(reject)
            return exc.code
        row = Received(message, received_t, body, retained)
        if kind == "sample":
            batch.sample_quota_bytes = self.sample_quota_bytes
        {"window": batch.windows, "state": batch.states, "event": batch.events,
         "sample": batch.sample_headers}[kind].append(row)
        batch.see(message["device"], min(received_t, message.get("t", received_t)) if retained else received_t)
        self.accepted[kind] = self.accepted.get(kind, 0) + 1
        return None

    def _add_chunk(self, batch: Batch, parsed, topic: str, payload: bytes, received_t: float) -> None:
        """A raw sample chunk: only its size can be checked before its header is known."""
        if not payload or len(payload) > MAX_CHUNK_BYTES:
            raise ProtocolError("sample_chunk_size", f"a sample chunk holds 1..{MAX_CHUNK_BYTES} bytes, not "
                                f"{len(payload)}")
        batch.sample_parts.append(SamplePart(parsed.device, parsed.sha256, parsed.chunk, bytes(payload),
                                             received_t, topic))
        batch.sample_quota_bytes = self.sample_quota_bytes
        batch.see(parsed.device, received_t)
        self.accepted["sample_chunk"] = self.accepted.get("sample_chunk", 0) + 1

    def _check(self, parsed, topic: str, payload: bytes) -> tuple[str, dict, str | None]:
        kind = KIND_OF_TOPIC.get(parsed.kind)
        if kind is None:
            raise ProtocolError("unexpected_topic", f"the collector does not read {parsed.kind!r} topics")
        try:
            raw = unwrap(payload)
            message = self._decode(raw, kind)
        except ProtocolError:
            raise
        except Exception as exc:  # a decoder bug must not stop ingest: keep the message, say so
            raise ProtocolError("decoder_error", f"the decoder failed ({exc.__class__.__name__}: {exc}); "
                                "this is a Harken bug: report it with the rejected bytes") from exc
        if message["device"] != parsed.device:
            raise ProtocolError("device_mismatch", f"payload says device {message['device']!r} but the topic is "
                                f"{parsed.device!r}; a device publishes only under its own dev/{{id}}/")
        for name in TEXT_FIELDS[kind]:
            if not _text_ok(message.get(name)):
                raise ProtocolError("bad_text", f"{kind}.{name} holds a NUL or an unpaired surrogate")
        if kind == "sample" and message["size_bytes"] > self.sample_max_clip_bytes:
            raise ProtocolError("sample_too_large", f"a {message['size_bytes']}-byte sample is over the collector's "
                                f"samples_max_clip_bytes ({self.sample_max_clip_bytes}); lower the device's "
                                "samples_max_clip_bytes")
        return kind, message, self._body(kind, raw, message)

    def _decode(self, raw: bytes, kind: str) -> dict:
        if kind == "window":
            try:
                return self.fast_windows.header(raw)
            except Undecided:
                self.undecided += 1
        return validate(parse_json(raw), expect=kind)

    def _body(self, kind: str, raw: bytes, message: dict) -> str | None:
        """The message as stored JSON text: the sender's own text when it is plain UTF-8 JSON."""
        suspicious = b"NaN" in raw or b"Infinity" in raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            suspicious, text = True, None
        if suspicious:
            if isinstance(message, WindowHeader):  # the compiled schema parsed it: NaN is only in a string
                message = self.fast_windows.decode(raw)
            try:
                text = dumps(message).decode()
            except ValueError:
                raise ProtocolError("not_finite", f"{kind} holds NaN or Infinity; send finite numbers") from None
        return text if kind in ("window", "sample") else None
