"""Delivery: publish model bundles and desired states to the fleet, retained, QoS 1.

    model/{sha}        the bundle bytes when they fit in one message (<= ``chunk_bytes``),
                       else a ``bundle`` header (size, chunk count, per-chunk sha256)
    model/{sha}/{i}    chunk i of a large bundle (raw bytes)
    dev/{id}/desired   what one device should run; ``rev`` grows by one per write, per device
    model/revocations  the signed revocation list (``harken model revoke``)

``sha`` is the model's sha256 (``Bundle.sha256``), the name a bundle has on the wire and in
the device store. Chunks go out before the header, so a device that sees a header finds
every chunk already retained. Both topics are retained: a device that is offline now
converges when it comes back. Every publish waits for the broker's PUBACK.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Iterable, Protocol

from shared.bundle import Bundle
from shared.codec import encode
from shared.errors import ConfigError, HarkenError
from shared.messages import AUTOMATION_LEVELS, validate
from shared.mqtt import CHUNK_BYTES, MqttSettings, build_client
from shared.topics import Topics

log = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = CHUNK_BYTES  # the broker's max_packet_size is set just above it
MAX_REV = 2 ** 53 - 1  # the largest rev every JSON reader keeps exact; a device reporting more is clamped
Publication = tuple[str, bytes, bool]  # topic, payload, retained


class DeliveryError(HarkenError):
    """The broker did not take a message (not connected, refused, or no PUBACK in time)."""


class Publisher(Protocol):
    """Anything that publishes QoS-1 messages and returns once the broker acknowledged all."""

    def publish_all(self, messages: Iterable[Publication]) -> int: ...


class DesiredRevs(Protocol):
    """Persisted per-device desired state.

    ``write_many({device: (build, floor)}, lease)`` gives each device its next rev (above ``floor``,
    the rev the device reports it applied), stores ``build(rev, previous)`` (``previous``: the last
    message, read in the same transaction) and returns the messages; with a lease (the rollout
    controller's), only while that lease is current.
    """

    def write_many(self, builds: dict, lease=None) -> dict[str, dict]: ...

    def get(self, device: str) -> dict | None: ...


def bundle_messages(topics: Topics, sha: str, data: bytes, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[Publication]:
    """The retained messages that carry one bundle: raw bytes, or chunks then a header."""
    if not 0 < chunk_bytes <= CHUNK_BYTES:
        raise ConfigError(f"chunk size {chunk_bytes} must be 1..{CHUNK_BYTES} bytes: the broker refuses larger "
                          "packets (max_packet_size)")
    if len(data) <= chunk_bytes:
        return [(topics.model(sha), data, True)]
    chunks = [data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]
    header = validate({
        "kind": "bundle", "v": "1.0", "sha256": sha, "size": len(data), "chunks": len(chunks),
        "chunk_size": chunk_bytes, "chunk_sha256": [hashlib.sha256(c).hexdigest() for c in chunks],
        "bundle_sha256": hashlib.sha256(data).hexdigest(),
    })
    out: list[Publication] = [(topics.chunk(sha, i), c, True) for i, c in enumerate(chunks)]
    out.append((topics.model(sha), encode(header), True))
    return out


def desired_message(device: str, rev: int, *, active: str | None, shadow: str | None = None,
                    automation: str | None = None, rollout: str | None = None,
                    probation: dict | None = None, config: dict | None = None, t: float | None = None) -> dict:
    """A validated ``desired`` message; absent fields are left out (the device keeps them)."""
    if automation is not None and automation not in AUTOMATION_LEVELS:
        raise ConfigError(f"automation {automation!r} is not one of {', '.join(AUTOMATION_LEVELS)}")
    msg = {"kind": "desired", "v": "1.0", "device": device, "rev": rev, "t": time.time() if t is None else t}
    for key, value in (("active", active), ("shadow", shadow), ("automation", automation),
                       ("rollout", rollout), ("probation", probation), ("config", config)):
        if value is not None:
            msg[key] = value
    return validate(msg, "desired")


@dataclass(frozen=True)
class DesiredTarget:
    """What one device should run. ``shadow=None`` means no shadow model."""

    active: str | None
    shadow: str | None = None
    automation: str | None = None

    def as_dict(self) -> dict:
        return {"active": self.active, "shadow": self.shadow, "automation": self.automation}


def clamp_floor(reported) -> int:
    """A device's reported rev as a floor: an integer in ``0 .. MAX_REV - 1``."""
    try:
        rev = int(reported)
    except (TypeError, ValueError):
        return 0
    if rev >= MAX_REV:
        log.warning("a device reports desired rev %d, past the largest rev (%d): clamped", rev, MAX_REV)
    return min(max(rev, 0), MAX_REV - 1)


class Delivery:
    """Publishes bundles and desired states through one publisher and one rev store."""

    def __init__(self, publisher: Publisher, revs: DesiredRevs, topics: Topics | None = None, *,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, probation: dict | None = None):
        self.publisher = publisher
        self.revs = revs
        self.topics = topics or Topics()
        self.chunk_bytes = chunk_bytes
        self.probation = probation

    def publish_bundle(self, bundle: Bundle) -> int:
        """Publish a verified bundle under its model sha256; returns the number of messages."""
        messages = bundle_messages(self.topics, bundle.sha256, bundle.raw, self.chunk_bytes)
        n = self.publisher.publish_all(messages)
        log.info("published bundle %s (%d bytes, %d messages)", bundle.sha256[:12], len(bundle.raw), n)
        return n

    def publish_revocations(self, payload: bytes) -> None:
        """Publish a signed revocation list (``harken model revoke``), retained for every device."""
        self.publisher.publish_all([(self.topics.revocations(), payload, True)])
        log.info("published the revocation list (%d bytes)", len(payload))

    def unpublish_bundle(self, sha: str, chunks: int = 0) -> None:
        """Clear the retained bundle (an empty retained payload deletes it on the broker)."""
        msgs = [(self.topics.chunk(sha, i), b"", True) for i in range(chunks)]
        self.publisher.publish_all([*msgs, (self.topics.model(sha), b"", True)])

    def write_desired(self, targets: dict[str, DesiredTarget], *, rollout: str | None = None,
                      config: dict | None = None, floors: dict[str, int] | None = None,
                      lease=None) -> dict[str, dict]:
        """Persist the next rev for every device, then publish all retained; returns the messages.

        ``config`` None keeps each device's last ``config`` (absent stays absent). ``lease``: the
        rollout controller's; the revs are written only while it is current (``LeaseLost``).

        ``floors``: the rev each device reports it applied; a new rev is always above it. A
        device reports what it likes, so a floor is clamped to ``MAX_REV - 1``: one device
        claiming rev 2^63-1 cannot overflow the rev column and fail every other device's write.
        """
        def build(device: str, target: DesiredTarget):
            def message(rev: int, previous: dict | None) -> dict:
                # no config given: keep the device's last one (a field-sample switch outlives a canary step)
                kept = config if config is not None else (previous or {}).get("config")
                return desired_message(device, rev, active=target.active, shadow=target.shadow,
                                       automation=target.automation, rollout=rollout,
                                       probation=self.probation if target.active else None, config=kept)
            return message

        floors = {d: clamp_floor(f) for d, f in (floors or {}).items()}
        return self._write({d: (build(d, t), floors.get(d, 0)) for d, t in targets.items()}, lease)

    def reconfigure(self, device: str, config: dict, floor: int = 0) -> dict:
        """Merge ``config`` into the device's last desired state, keeping its models, automation
        and rollout as the write finds them (a rollout step just before is not undone)."""
        def message(rev: int, previous: dict | None) -> dict:
            last = previous or {}
            return desired_message(device, rev, active=last.get("active"), shadow=last.get("shadow"),
                                   automation=last.get("automation"), rollout=last.get("rollout"),
                                   probation=self.probation if last.get("active") else None,
                                   config={**(last.get("config") or {}), **config})
        return self._write({device: (message, clamp_floor(floor))}, None)[device]

    def _write(self, builds: dict, lease) -> dict[str, dict]:
        messages = self.revs.write_many(builds, lease=lease) if builds else {}
        if messages:
            self.publisher.publish_all(
                (self.topics.desired(d), encode(m), True) for d, m in messages.items())
        return messages


class ClientPublisher:
    """Publishes QoS 1 over a running paho client and waits for every PUBACK.

    The collector publishes over its ingest connection (one session, one identity per replica);
    ``connected`` says whether that connection is up. Nothing is queued while it is down:
    a publish then fails at once, and the caller (the controller's next tick) tries again.
    """

    def __init__(self, client, connected: threading.Event, timeout_s: float = 30.0):
        self._client = client
        self._connected = connected
        self.timeout_s = timeout_s

    def publish_all(self, messages: Iterable[Publication]) -> int:
        if not self._connected.is_set():
            raise DeliveryError("not connected to the broker; the messages will be sent once it is back")
        infos = [self._client.publish(topic, payload, qos=1, retain=retain) for topic, payload, retain in messages]
        deadline = time.monotonic() + self.timeout_s
        for info in infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                raise DeliveryError(f"publish to {info} failed: {exc}; is the broker reachable?") from exc
            if not info.is_published():
                raise DeliveryError(f"the broker did not acknowledge {len(infos)} messages within "
                                    f"{self.timeout_s:.0f} s; is it overloaded or gone?")
        return len(infos)

    def close(self) -> None:
        """The connection belongs to its owner; nothing to close here."""


class MqttPublisher(ClientPublisher):
    """A publisher with a connection of its own (tools, tests, benchmarks): a clean session."""

    def __init__(self, broker: str | MqttSettings, *, username: str | None = None, password: str | None = None,
                 client_id: str | None = None, timeout_s: float = 30.0, max_inflight: int = 200,
                 ca_file: str | None = None):
        settings = broker if isinstance(broker, MqttSettings) else MqttSettings.from_url(
            broker, client_id or f"harken-delivery-{uuid.uuid4().hex[:8]}", username=username or "",
            password=password or "", tls_ca=ca_file or "", max_inflight=max_inflight)
        where = f"{settings.host}:{settings.port}"
        self._reason: str | None = None
        client = build_client(settings)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        super().__init__(client, threading.Event(), timeout_s)
        try:
            client.connect(*settings.address, **settings.connect_kwargs())
        except OSError as exc:
            raise DeliveryError(f"cannot reach the broker at {where}: {exc}; is it running?") from exc
        client.loop_start()
        if not self._connected.wait(timeout_s) or self._reason:
            self.close()
            raise DeliveryError(f"broker at {where} refused the connection ({self._reason or 'timeout'}); "
                                "check the URL, the credentials and the client certificate")
        log.info("delivery connected to %s as %s", where, settings.username or settings.client_id)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._reason = None if not reason_code.is_failure else str(reason_code)
        self._connected.set()  # a refusal wakes the constructor too: it reads the reason

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("delivery disconnected from the broker: %s", reason_code)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
