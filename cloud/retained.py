"""Clear retained ``stats``, ``event`` and field-sample messages from the broker.

Windows, events and samples are news, never state: a device that publishes one retained makes the
broker store it and replay it to every later subscriber (an operator's ``mosquitto_sub``,
another collector's direct subscription) for ever. mosquitto's ACL cannot deny the retain
flag per topic, so the collector undoes it: a sweep subscribes to ``dev/+/stats``,
``dev/+/event``, ``dev/+/sample`` and ``dev/+/sample/+/+`` (QoS 0, subscription identifier
``SWEEP_ID``), and as soon as the SUBACK arrives unsubscribes again. Between the two the broker sends every retained message on
those topics (flagged retained; live messages that slip in are not, and are ignored here:
the shared subscription stores them). Each retained one is cleared with an empty retained
publish and counted per device. The live copy of each was stored when it was sent, so
nothing is lost. The collector sweeps after every connect and every ``retained_sweep_s``.

Runs its callbacks on the MQTT network thread; ``run`` may be called from any thread.
"""
from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from shared.errors import ProtocolError
from shared.topics import QOS, Topics

log = logging.getLogger(__name__)

SWEEP_ID = 2  # MQTT v5 subscription identifier of the sweep's subscriptions
KINDS = ("stats", "event", "sample", "sample_chunk")


class RetainedSweep:
    def __init__(self, client: mqtt.Client, topics: Topics):
        self._client = client
        self.topics = topics
        self._lock = threading.Lock()
        self._sub_mid: int | None = None
        self._unsub_mid: int | None = None
        self.done = threading.Event()
        self.done.set()
        self.sweeps = 0
        self.cleared = 0
        self.cleared_by_device: dict[str, int] = {}

    @property
    def filters(self) -> list[str]:
        return [self.topics.filter(kind) for kind in KINDS]

    def start(self) -> bool:
        """Begin a sweep (False if one is under way or the client is not connected)."""
        with self._lock:
            if not self.done.is_set():
                return False
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = SWEEP_ID
            options = SubscribeOptions(qos=0, retainHandling=SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE)
            rc, mid = self._client.subscribe([(f, options) for f in self.filters], properties=props)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                return False
            self.done.clear()
            self._sub_mid, self._unsub_mid = mid, None
            return True

    def run(self, timeout_s: float = 10.0) -> int:
        """Sweep once and wait for it; returns how many retained messages it cleared."""
        before = self.cleared
        if not self.start():
            self.done.wait(timeout_s)  # one was under way: let it finish
            return self.cleared - before
        self.done.wait(timeout_s)
        return self.cleared - before

    def owns(self, mid: int) -> bool:
        with self._lock:
            return mid == self._sub_mid

    def on_subscribed(self, mid: int, reason_codes) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("the broker refused the retained-message sweep's subscription to %s; the collector's ACL "
                      "needs read and write on %s/dev/+/stats, /event and /sample", ", ".join(self.filters),
                      self.topics.prefix)
            self.abandon()
            return
        rc, unsub = self._client.unsubscribe(self.filters)
        with self._lock:
            self._unsub_mid = unsub if rc == mqtt.MQTT_ERR_SUCCESS else None
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self.abandon()

    def on_unsubscribed(self, mid: int) -> None:
        with self._lock:
            if mid != self._unsub_mid:
                return
            self._sub_mid = self._unsub_mid = None
            self.sweeps += 1
        self.done.set()

    def on_message(self, msg) -> None:
        """A copy delivered to the sweep: clear it if the broker holds it retained."""
        if not msg.retain or not msg.payload:
            return
        try:
            parsed = self.topics.parse(msg.topic)
        except (ProtocolError, UnicodeDecodeError):
            return
        if parsed.kind not in KINDS:
            return
        self._client.publish(msg.topic, b"", qos=QOS, retain=True)
        self.cleared += 1
        n = self.cleared_by_device.get(parsed.device, 0) + 1
        self.cleared_by_device[parsed.device] = n
        if n == 1:
            log.warning("device %s left a retained message on %s (%d bytes); cleared it: devices must not retain "
                        "%s", parsed.device, msg.topic, len(msg.payload), " or ".join(KINDS))

    def abandon(self) -> None:
        """The connection went away mid-sweep: the next connect starts a new one."""
        with self._lock:
            self._sub_mid = self._unsub_mid = None
        self.done.set()
