"""A test-side MQTT client: records what arrives, waits on conditions (no sleeps)."""
from __future__ import annotations

import logging
import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class Watcher:
    """Subscribes to ``filters`` (persistent session, resubscribed on every connect)."""

    def __init__(self, port: int, filters: list[str], *, username: str | None = None, password: str | None = None,
                 client_id: str | None = None):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.cond = threading.Condition()
        self.filters = filters
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"w-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.05, 0.3)
        self.client.on_connect = self._connected
        self.client.on_subscribe = self._subscribed
        self.client.on_message = self._message
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker confirmed the subscriptions (they are in its session)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        self.client.connect_async("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.connected.wait(10), "the watcher could not connect"
        assert self.subscribed.wait(10), "the broker did not confirm the watcher's subscriptions"

    def _connected(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe([(f, 1) for f in self.filters])
            self.connected.set()

    def _subscribed(self, client, userdata, mid, reason_codes, properties):
        self.subscribed.set()

    def _message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = 15.0, what: str = "condition"):
        with self.cond:
            ok = self.cond.wait_for(lambda: predicate(self.messages), timeout)
        assert ok, f"timed out waiting for {what}; got {len(self.messages)} messages"

    def on(self, topic_suffix: str) -> list[bytes]:
        with self.cond:
            return [p for t, p, _ in self.messages if t.endswith(topic_suffix)]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class LogWaiter(logging.Handler):
    """Sets an event when a record whose message contains ``text`` is logged."""

    def __init__(self, logger: str, text: str):
        super().__init__(logging.DEBUG)
        self.text, self.seen = text, threading.Event()
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(logger)

    def emit(self, record):
        self.records.append(record)
        if self.text in record.getMessage():
            self.seen.set()

    def __enter__(self):
        self._level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)
