"""A plain paho subscriber that keeps every message it sees, for delivery tests."""
from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt


class Collecting:
    def __init__(self, port: int, filters: list[str]):
        self.messages: dict[str, bytes] = {}
        self.retained: set[str] = set()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in filters])
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._ready.wait(10), "subscriber could not subscribe"

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages[msg.topic] = msg.payload
            if msg.retain:
                self.retained.add(msg.topic)

    def wait_for(self, predicate, timeout_s: float = 10.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if predicate(self.messages):
                    return dict(self.messages)
            time.sleep(0.02)
        with self._lock:
            raise AssertionError(f"timed out; have {sorted(self.messages)}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
