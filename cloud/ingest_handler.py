"""Ingest's pure half: one (topic, payload) becomes a validated row of a ``Batch``, or a ``Reject``.

Fast and free of I/O, so the fuzz tests drive it without a broker; ``cloud.ingest.Ingest``
feeds it from MQTT and commits what it produces.
"""
from __future__ import annotations

import logging
import time
import zlib
from typing import Callable

from cloud.store import Batch, Received, Reject
from shared.codec import dumps
from shared.errors import ProtocolError
from shared.messages import decode
from shared.topics import Topics

log = logging.getLogger(__name__)

KIND_OF_TOPIC = {"stats": "window", "state": "state", "event": "event"}
TEXT_FIELDS = {"window": ("model", "shadow_model", "agent_version"), "event": ("model", "reason"),
               "state": ()}


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


class IngestHandler:
    """Topic + payload → a validated row in a ``Batch``, or a ``Reject`` in it."""

    def __init__(self, topics: Topics, *, reject_log_interval_s: float = 60.0):
        self.topics = topics
        self.reject_log = RejectLog(reject_log_interval_s)
        self.accepted: dict[str, int] = {}
        self.rejected: dict[str, int] = {}

    def add(self, batch: Batch, topic: str, payload: bytes, received_t: float, retained: bool = False) -> str | None:
        """Add one message to ``batch``; returns the reject code, or None if it was accepted.

        A retained message (the broker replaying a device's last state at subscribe) says
        nothing about when the device was last heard from, so it counts as seen at its own ``t``
        (never later than now). Windows are not checked against any device clock: the store
        keeps them exactly once by ``(device, boot, seq)`` whatever their ``t_start``.
        """
        try:
            kind, message, body = self._check(topic, payload)
        except ProtocolError as exc:
            reject = Reject.of(received_t, topic, exc.code, exc.detail, payload)
            batch.rejects.append(reject)
            self.rejected[exc.code] = self.rejected.get(exc.code, 0) + 1
            self.reject_log.note(reject)
            return exc.code
        row = Received(message, received_t, body, retained)
        {"window": batch.windows, "state": batch.states, "event": batch.events}[kind].append(row)
        batch.see(message["device"], min(received_t, message.get("t", received_t)) if retained else received_t)
        self.accepted[kind] = self.accepted.get(kind, 0) + 1
        return None

    def _check(self, topic: str, payload: bytes) -> tuple[str, dict, str | None]:
        parsed = self.topics.parse(topic)
        kind = KIND_OF_TOPIC.get(parsed.kind)
        if kind is None:
            raise ProtocolError("unexpected_topic", f"the collector does not read {parsed.kind!r} topics")
        try:
            message = decode(payload, expect=kind)
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
        return kind, message, self._body(kind, payload, message)

    @staticmethod
    def _body(kind: str, payload: bytes, message: dict) -> str | None:
        """The message as stored JSON text: the sender's own text when it is plain UTF-8 JSON."""
        raw = zlib.decompress(payload) if payload[:1] == b"\x78" else payload
        suspicious = b"NaN" in raw or b"Infinity" in raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            suspicious, text = True, None
        if suspicious:
            try:
                text = dumps(message).decode()
            except ValueError:
                raise ProtocolError("not_finite", f"{kind} holds NaN or Infinity; send finite numbers") from None
        return text if kind == "window" else None
