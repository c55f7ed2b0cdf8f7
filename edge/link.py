"""The agent's MQTT link (paho-mqtt 2, MQTT v5).

- client id = device id; persistent session (clean start off, a session expiry interval),
  so QoS 1 messages to the device wait at the broker while it is away;
- last will = a retained ``state`` message ``{"online": false}``;
- reconnects by itself with exponential backoff and jitter, capped; the first connection
  may fail too (the agent keeps running and spools);
- every publish can carry an ``on_ack`` callback, called from the network thread when the
  broker's PUBACK arrives (or with ``ok=False`` when the broker refuses the message);
- incoming messages are handed to ``on_message(topic, payload)`` from the network thread:
  the receiver must only queue them;
- no exception escapes a paho callback (paho would end its network thread and the device
  would go silent for good); a watchdog restarts the network thread should it end anyway.
"""
from __future__ import annotations

import functools
import logging
import random
import threading
from dataclasses import dataclass
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.watchdog import Watchdog
from shared.codec import encode
from shared.mqtt import MqttSettings, build_client
from shared.topics import QOS

log = logging.getLogger(__name__)

OnAck = Callable[[bool, str], None]


@dataclass(frozen=True)
class LinkSettings(MqttSettings):
    """The device's connection: client id = device id, a persistent session, reconnect backoff."""

    device_id: str = ""
    session_expiry_s: int = 86400
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    max_inflight: int = 40

    @classmethod
    def from_config(cls, cfg) -> "LinkSettings":
        host, port, tls = cfg.broker_host_port
        return cls(device_id=cfg.device_id, host=host, port=port, tls=tls, tls_ca=cfg.tls_ca,
                   tls_cert=cfg.tls_cert, tls_key=cfg.tls_key, tls_insecure=cfg.tls_insecure,
                   username=cfg.username, password=cfg.password, keepalive_s=cfg.keepalive_s,
                   session_expiry_s=cfg.session_expiry_s, reconnect_min_s=cfg.reconnect_min_s,
                   reconnect_max_s=cfg.reconnect_max_s, max_inflight=cfg.spool_inflight + 20)

    def mqtt(self) -> MqttSettings:
        return self.but(client_id=self.device_id)


def backoff_s(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): doubling, capped, half of it jittered."""
    ceiling = min(high, low * (2.0 ** min(attempt, 30)))
    return ceiling / 2.0 + rng.uniform(0.0, ceiling / 2.0)


def _never_raises(handler):
    """Wrap a paho callback: an exception that escaped into paho would end its network thread."""
    @functools.wraps(handler)
    def guarded(self, *args, **kwargs) -> None:
        try:
            handler(self, *args, **kwargs)
        except Exception:
            self.callback_errors += 1
            log.exception("%s failed; the link carries on", handler.__name__)
    return guarded


class Link:
    """One MQTT connection for one device."""

    watchdog_s = 5.0  # how often the watchdog checks paho's network thread
    callback_errors = 0  # exceptions caught in paho callbacks
    _watchdog: Watchdog | None = None

    def __init__(self, settings: LinkSettings, *, will_topic: str, will_message: dict,
                 on_message: Callable[[str, bytes], None],
                 on_connected: Callable[[bool], None] | None = None,
                 on_disconnected: Callable[[], None] | None = None,
                 rng: random.Random | None = None):
        self.settings = settings
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._pending: dict[int, OnAck | None] = {}  # mid → callback, until the PUBACK
        self._early: dict[int, tuple[bool, str]] = {}  # PUBACKs that beat the publish() return
        self._filters: set[str] = set()
        self._attempt = 0
        self._stopping = False  # set by stop(): our own disconnect is not a lost broker
        self.connected = threading.Event()
        self.connects = 0
        self._client = self._build_client(will_topic, will_message)

    # -- setup ---------------------------------------------------------------------------
    def _build_client(self, will_topic: str, will_message: dict) -> mqtt.Client:
        client = build_client(self.settings.mqtt())
        client.will_set(will_topic, encode(will_message), qos=QOS, retain=True)
        client.reconnect_delay_set(*self._next_delay())
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        return client

    def _next_delay(self) -> tuple[float, float]:
        s = self.settings
        delay = backoff_s(self._attempt, s.reconnect_min_s, s.reconnect_max_s, self._rng)
        self._attempt += 1
        return delay, delay  # paho waits min_delay first; we recompute it before every wait

    def start(self) -> None:
        """Connect in the background; never raises because the broker is unreachable."""
        s = self.settings
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive_s, clean_start=False, properties=props)
        self._client.loop_start()
        self._watchdog = Watchdog("the MQTT network thread", self.network_alive, self.restart_network,
                                  self.watchdog_s).start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Disconnect cleanly (no last will) and stop the network thread."""
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.stop()
        if self.connected.is_set():
            self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    def wait_connected(self, timeout_s: float) -> bool:
        return self.connected.wait(timeout_s)

    # -- the watchdog's view ---------------------------------------------------------------
    @property
    def restarts(self) -> int:
        """Times the watchdog found the network thread dead and restarted it."""
        return self._watchdog.restarts if self._watchdog is not None else 0

    def network_alive(self) -> bool:
        """paho's network thread runs (or we are stopping)."""
        # paho has no public liveness check: loop_start() keeps its thread in ``_thread`` and the
        # thread clears it when the loop ends (tests/edge/test_link_watchdog.py holds this).
        thread = getattr(self._client, "_thread", None)
        return self._stopping or (thread is not None and thread.is_alive())

    def restart_network(self) -> None:
        """Reconnect (paho re-sends what was in flight) and start a new network thread."""
        self.connected.clear()
        try:
            self._client.reconnect()
        except OSError as exc:  # the new loop keeps retrying with backoff
            log.warning("reconnecting to %s:%d after a network-thread restart failed: %s", self.settings.host,
                        self.settings.port, exc)
        self._client.loop_start()

    # -- outgoing ------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, retain: bool = False, on_ack: OnAck | None = None) -> int:
        """Queue one QoS 1 message; ``on_ack(ok, reason)`` runs when the broker answers."""
        info = self._client.publish(topic, payload, qos=QOS, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("publish to %s failed locally (%s); it will be retried", topic, mqtt.error_string(info.rc))
        early = None
        with self._lock:
            if info.mid in self._early:
                early = self._early.pop(info.mid)
            else:
                self._pending[info.mid] = on_ack
        if early is not None and on_ack is not None:
            on_ack(*early)
        return info.mid

    def subscribe(self, *filters: str) -> None:
        with self._lock:
            new = [f for f in filters if f not in self._filters]
            self._filters.update(new)
        if new and self.connected.is_set():
            self._client.subscribe([(f, SubscribeOptions(qos=QOS)) for f in new])

    def unsubscribe(self, *filters: str) -> None:
        with self._lock:
            gone = [f for f in filters if f in self._filters]
            self._filters.difference_update(gone)
        if gone and self.connected.is_set():
            self._client.unsubscribe(gone)

    # -- paho callbacks (network thread) -------------------------------------------------
    @_never_raises
    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker %s:%d refused the connection: %s; check username, password and ACL",
                      self.settings.host, self.settings.port, reason_code)
            return
        self._attempt = 0
        self.connects += 1
        log.info("connected to %s:%d as %s (session present: %s)", self.settings.host, self.settings.port,
                 self.settings.device_id, flags.session_present)
        with self._lock:
            filters = sorted(self._filters)
        if filters:
            client.subscribe([(f, SubscribeOptions(qos=QOS)) for f in filters])
        self.connected.set()
        if self._on_connected is not None:
            self._on_connected(flags.session_present)

    @_never_raises
    def _handle_connect_fail(self, client, userdata) -> None:
        first = self._attempt <= 1  # the first failure of a streak is worth a warning
        delay, _ = self._next_delay()
        log.log(logging.WARNING if first else logging.DEBUG,
                "cannot reach broker %s:%d; retrying in %.2f s with backoff (check broker_url, the TLS "
                "settings and that the broker runs)", self.settings.host, self.settings.port, delay)
        client.reconnect_delay_set(delay, delay)

    @_never_raises
    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        client.reconnect_delay_set(*self._next_delay())
        if was:
            if self._stopping:
                log.info("disconnected from %s:%d", self.settings.host, self.settings.port)
            else:
                log.warning("disconnected from %s:%d (%s); reconnecting with backoff",
                            self.settings.host, self.settings.port, reason_code)
            if self._on_disconnected is not None:
                self._on_disconnected()

    @_never_raises
    def _handle_publish(self, client, userdata, mid, reason_code, properties) -> None:
        ok = not reason_code.is_failure
        reason = "" if ok else str(reason_code)
        if not ok:
            log.error("broker refused message %d: %s; check the ACL for this device", mid, reason_code)
        with self._lock:
            if mid not in self._pending:
                self._early[mid] = (ok, reason)
                return
            callback = self._pending.pop(mid)
        if callback is not None:
            callback(ok, reason)

    @_never_raises
    def _handle_message(self, client, userdata, message) -> None:
        try:
            self._on_message(message.topic, bytes(message.payload))
        except Exception:  # a receiver bug must not kill the network thread
            log.exception("handling a message on %s failed", message.topic)
