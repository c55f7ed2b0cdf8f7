"""Ingest: MQTT messages in, validated batches committed, then acknowledged.

``IngestHandler`` turns one (topic, payload) into a row of a ``Batch`` or a ``Reject``; it is
pure and fast, so the fuzz tests drive it without a broker. ``Ingest`` owns the MQTT client
(paho 2, MQTT v5, persistent session, manual acknowledgement) and one writer thread that
commits batches of up to ``batch_max`` messages or ``batch_ms`` and only then sends the
PUBACKs: a message is acknowledged once it is stored (or rejected and recorded), so a crash
at any instant loses nothing and the unique key makes redeliveries harmless.

Windows and events arrive through a shared subscription (replicas split them). Device
state does not: the broker never sends retained messages to a shared subscription, so each
collector subscribes to ``state`` directly and gets every device's retained state at connect.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.config import CollectorConfig
from cloud.store import Batch, BatchResult, Received, Reject, Store, StoreDataError
from shared.codec import dumps
from shared.errors import ConfigError, ProtocolError, StoreError
from shared.messages import decode
from shared.topics import QOS, Topics

log = logging.getLogger(__name__)

KIND_OF_TOPIC = {"stats": "window", "state": "state", "event": "event"}
TEXT_FIELDS = {"window": ("model", "shadow_model", "agent_version"), "event": ("model", "reason"),
               "state": ()}
RETRY_MAX_S = 10.0


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

    def __init__(self, topics: Topics, *, retention_full_s: float, reject_log_interval_s: float = 60.0):
        self.topics = topics
        self.retention_full_s = retention_full_s
        self.reject_log = RejectLog(reject_log_interval_s)
        self.accepted: dict[str, int] = {}
        self.rejected: dict[str, int] = {}

    def add(self, batch: Batch, topic: str, payload: bytes, received_t: float, retained: bool = False) -> str | None:
        """Add one message to ``batch``; returns the reject code, or None if it was accepted.

        A retained message (the broker replaying a device's last state at subscribe) says
        nothing about when the device was last heard from, so it counts as seen at its own ``t``.
        """
        try:
            kind, message, body = self._check(topic, payload, received_t)
        except ProtocolError as exc:
            reject = Reject.of(received_t, topic, exc.code, exc.detail, payload)
            batch.rejects.append(reject)
            self.rejected[exc.code] = self.rejected.get(exc.code, 0) + 1
            self.reject_log.note(reject)
            return exc.code
        row = Received(message, received_t, body)
        {"window": batch.windows, "state": batch.states, "event": batch.events}[kind].append(row)
        batch.see(message["device"], min(received_t, message.get("t", received_t)) if retained else received_t)
        self.accepted[kind] = self.accepted.get(kind, 0) + 1
        return None

    def _check(self, topic: str, payload: bytes, received_t: float) -> tuple[str, dict, str | None]:
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
        if kind == "window" and message["t_start"] < received_t - self.retention_full_s:
            raise ProtocolError("too_late", f"window starts {received_t - message['t_start']:.0f} s ago, past "
                                f"the full-detail retention ({self.retention_full_s:.0f} s); it cannot be "
                                "checked against duplicates any more")
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


@dataclass
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_t: float
    retain: bool = False


@dataclass
class IngestStats:
    messages: int = 0
    batches: int = 0
    windows_new: int = 0
    events_new: int = 0
    states: int = 0
    rejects: int = 0
    store_failures: int = 0
    last_commit_t: float = 0.0
    connects: int = 0
    extra: dict = field(default_factory=dict)


CommitHook = Callable[[list[_Message], BatchResult, float], None]


class Ingest:
    """The collector's MQTT side: subscribe, batch, commit, acknowledge."""

    def __init__(self, config: CollectorConfig, store: Store, handler: IngestHandler, *,
                 on_commit: CommitHook | None = None):
        self.config = config
        self.store = store
        self.handler = handler
        self.topics = handler.topics
        self.stats = IngestStats()
        self._on_commit = on_commit
        self._queue: queue.Queue[_Message] = queue.Queue()
        self._accepting = threading.Event()
        self._stop = threading.Event()
        self._generation = 0
        self.connected = threading.Event()
        self._client = self._build_client()
        self._writer = threading.Thread(target=self._write_loop, name="harken-ingest-writer", daemon=True)

    # -- MQTT -------------------------------------------------------------------------------
    def _build_client(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.mqtt_client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True, reconnect_on_failure=True)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password or None)
        if cfg.broker_host_port[2]:
            import ssl

            try:
                client.tls_set(ca_certs=cfg.tls_ca or None, certfile=cfg.tls_cert or None,
                               keyfile=cfg.tls_key or None, cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ConfigError(f"cannot set up TLS with the given tls_ca/tls_cert/tls_key: {exc}") from exc
            client.tls_insecure_set(cfg.tls_insecure)
        client.reconnect_delay_set(0.5, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker %s refused the collector: %s; check username/password and the ACL",
                      self.config.broker_url, reason_code)
            return
        self._generation += 1
        self.stats.connects += 1
        log.info("connected to %s as %s (session present: %s)", self.config.broker_url,
                 self.config.mqtt_client_id, flags.session_present)
        group = self.config.group
        client.subscribe([(self.topics.shared_filter(group, "stats"), QOS),
                          (self.topics.shared_filter(group, "event"), QOS),
                          (self.topics.filter("state"), QOS)])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("broker refused subscriptions (%s): check the collector's ACL on %s/dev/+/...",
                      ", ".join(failed), self.topics.prefix)
            return
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("lost the broker %s (%s); reconnecting", self.config.broker_url, reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        if not self._accepting.is_set():
            return  # shutting down: not acknowledged, so the broker sends it again after restart
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = repr(msg._topic)[:200]
        self._queue.put(_Message(topic, msg.payload, msg.mid, msg.qos, self._generation, time.time(), msg.retain))

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        host, port, _ = self.config.broker_host_port
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = self.config.receive_maximum
        self._accepting.set()
        self._writer.start()
        self._client.connect_async(host, port, keepalive=self.config.keepalive_s, clean_start=False,
                                   properties=props)
        self._client.loop_start()

    def wait_connected(self, timeout_s: float) -> bool:
        return self.connected.wait(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking messages, commit and acknowledge what was taken, then disconnect."""
        self._accepting.clear()
        self._stop.set()
        if self._writer.ident is not None:
            self._writer.join(timeout_s)
        if self._writer.is_alive():
            log.error("the writer did not finish in %.0f s; unacknowledged messages will be redelivered", timeout_s)
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    # -- the writer ------------------------------------------------------------------------------
    def _next_batch(self) -> list[_Message]:
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return []
        items = [first]
        deadline = time.monotonic() + self.config.batch_ms / 1000.0
        while len(items) < self.config.batch_max:
            try:
                items.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                items.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return items

    def _write_loop(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            items = self._next_batch()
            if not items:
                continue
            try:
                self._process(items)
            except Exception:  # a bug must not stop ingest; the broker redelivers these later
                log.exception("failed to process a batch of %d messages", len(items))

    def _process(self, items: list[_Message]) -> None:
        batch = Batch()
        for m in items:
            self.handler.add(batch, m.topic, m.payload, m.received_t, m.retain)
        result = self._commit(batch)
        if result is None:
            return  # stopping while the store is down: the broker redelivers later
        for m in items:
            if m.qos > 0 and m.generation == self._generation:
                self._client.ack(m.mid, m.qos)
        s = self.stats
        s.messages += len(items)
        s.batches += 1
        s.windows_new += result.windows_new
        s.events_new += result.events_new
        s.states += result.states
        s.rejects += result.rejects
        s.last_commit_t = time.time()
        # lag: from the oldest message's arrival to its commit; duplicates: redelivered windows
        s.extra["lag_s"] = s.last_commit_t - min(m.received_t for m in items)
        s.extra["duplicates"] = s.extra.get("duplicates", 0) + len(batch.windows) - result.windows_new
        if self._on_commit is not None:
            self._on_commit(items, result, s.last_commit_t)

    def _commit(self, batch: Batch) -> BatchResult | None:
        delay = 0.1
        while True:
            try:
                try:
                    return self.store.write(batch)
                except StoreDataError as exc:
                    log.warning("the store refused a batch (%s); storing its messages one by one", exc)
                    return self._commit_one_by_one(batch)
            except StoreError as exc:
                self.stats.store_failures += 1
                if self._stop.is_set() and delay >= RETRY_MAX_S:
                    log.error("giving up on a batch at shutdown: %s", exc)
                    return None
                log.error("cannot commit a batch of %d messages: %s; retrying in %.1f s", len(batch), exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def _commit_one_by_one(self, batch: Batch) -> BatchResult:
        """Write each row alone; a row the database refuses becomes a Reject ('unstorable')."""
        totals = [0, 0, 0, 0]
        singles = ([Batch(windows=[r]) for r in batch.windows] + [Batch(events=[r]) for r in batch.events]
                   + [Batch(states=[r]) for r in batch.states] + [Batch(rejects=[r]) for r in batch.rejects])
        for single in singles:
            rows = single.windows + single.events + single.states
            for r in rows:
                single.see(r.message["device"], r.received_t)
            try:
                res = self.store.write(single)
            except StoreDataError as exc:
                if not rows:
                    log.error("the store refused a rejected message's record (%s); it is only logged", exc)
                    continue
                r = rows[0]
                body = dumps(r.message) if r.body is None else r.body.encode()
                res = self.store.write(Batch(rejects=[Reject.of(r.received_t, f"device:{r.message['device']}",
                                                                "unstorable", str(exc)[:500], body)]))
            for i, v in enumerate((res.windows_new, res.events_new, res.states, res.rejects)):
                totals[i] += v
        return BatchResult(*totals)
