"""Ingest: MQTT messages in, validated batches committed, then acknowledged.

``IngestHandler`` (``cloud.ingest_handler``) turns one (topic, payload) into a row of a
``Batch`` or a ``Reject``. ``Ingest`` owns the collector's one MQTT connection (paho 2,
MQTT v5, persistent session, manual acknowledgement; built by ``shared.mqtt``) and one
writer thread that hands batches of up to ``batch_max`` messages or ``batch_ms`` to the writer
(``cloud.ingest_writer``: a child process by default) and, once they are committed, sends the
PUBACKs: a message is acknowledged once it is stored (or rejected and
recorded), so a crash at any instant loses nothing and the unique key makes redeliveries
harmless. Then each device gets a receipt naming its windows and events of the batch
(``shared.receipts``; merged over up to a second of batches while a backlog drains,
``cloud.ingest_receipts``): the device keeps them until then, since the broker can lose what it
acknowledged. The same connection publishes (``publisher()``): bundles, desired states,
alerts and receipts, so a replica has one session and one identity on the broker.

Windows and events arrive through a shared subscription (replicas split them). Device
state does not: the broker never sends retained messages to a shared subscription, so each
collector subscribes to ``state`` directly and gets every device's retained state at connect.

What waits for the writer is bounded (``cloud.ingest_queue``): QoS 1 messages by the receive
maximum the broker honours, QoS 0 ones (which no receive maximum limits) are shed past
their share and counted. paho parses every packet in Python on its network thread, the
collector's narrowest stage, so ``on_message`` only queues the bytes of an ordinary message;
the writer does the rest in batches. ``readiness()`` says whether messages reach the store now.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from paho.mqtt.subscribeoptions import SubscribeOptions

from cloud.config import CollectorConfig
from cloud.ingest_handler import KIND_OF_TOPIC, IngestHandler, RejectLog
from cloud.ingest_queue import IngestQueue, InMessage
from cloud.ingest_receipts import PendingReceipts
from cloud.ingest_writer import Outcome, Writer, WriterProcess, in_memory
from cloud.retained import SWEEP_ID, RetainedSweep
from cloud.store import BatchResult, Store
from shared.mqtt import build_client
from shared.topics import QOS

log = logging.getLogger(__name__)

__all__ = ["KIND_OF_TOPIC", "CommitHook", "InMessage", "Ingest", "IngestHandler", "IngestQueue", "IngestStats",
           "RejectLog"]

STALL_S = 10.0  # a commit pending longer than this makes the collector not ready
SHED_LOG_S = 60.0  # shedding is logged at most this often (the count is always kept)


@dataclass
class IngestStats:
    messages: int = 0
    batches: int = 0
    windows_new: int = 0
    events_new: int = 0
    states: int = 0
    rejects: int = 0
    sample_pieces: int = 0  # sample headers and chunks staged (cloud/samples assembles them)
    store_failures: int = 0
    last_commit_t: float = 0.0
    connects: int = 0
    receipts: int = 0  # receipt messages published to devices
    extra: dict = field(default_factory=dict)


CommitHook = Callable[[list[InMessage], BatchResult, float], None]


class Ingest:
    """The collector's MQTT side: subscribe, batch, commit, acknowledge; and publish."""

    def __init__(self, config: CollectorConfig, store: Store, handler: IngestHandler, *,
                 on_commit: CommitHook | None = None,
                 on_samples_ready: Callable[[tuple], None] | None = None):
        self.config = config
        self.store = store
        self.handler = handler
        self.topics = handler.topics
        self.stats = IngestStats()
        self._on_commit = on_commit
        self._on_samples_ready = on_samples_ready  # (device, sha256) pairs whose every chunk is stored
        self.queue = IngestQueue(config.ingest_queue_max, config.receive_maximum, config.ingest_queue_bytes)
        self._accepting = threading.Event()
        self._stop = threading.Event()
        self._generation = 0
        self._commit_since: float | None = None  # monotonic time the writer last answered, while it has work
        self._store_error: str | None = None  # why the last commit failed (None: it worked)
        self._shed_logged = float("-inf")
        self.connected = threading.Event()
        self.settings = config.mqtt_settings()
        self._client = self._build_client()
        self.sweep = RetainedSweep(self._client, self.topics)
        self._work = self._build_writer()
        self._receipts = PendingReceipts(self.topics)
        self._writer = threading.Thread(target=self._write_loop, name="harken-ingest-writer", daemon=True)

    # -- MQTT -------------------------------------------------------------------------------
    def _build_client(self):
        client = build_client(self.settings, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        return client

    @property
    def client(self):
        return self._client

    def publisher(self):
        """A QoS-1 publisher over this connection (``cloud.delivery.ClientPublisher``)."""
        from cloud.delivery import ClientPublisher

        return ClientPublisher(self._client, self.connected)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker %s refused the collector: %s; check username/password and the ACL",
                      self.config.broker_url, reason_code)
            return
        self._generation += 1
        self.stats.connects += 1
        log.info("connected to %s as %s (session present: %s)", self.config.broker_url,
                 self.settings.username or self.settings.client_id, flags.session_present)
        # No subscription identifier: paho parses a PUBLISH's properties in Python, and one
        # identifier cost its network thread 13-25 µs per message (a third of a bare subscriber's
        # whole cost). Only the sweep's copies carry one (SWEEP_ID): a message matching a shared
        # and a non-shared subscription comes once per subscription (MQTT 5, 4.8.2), each copy
        # with its own subscription's identifiers, so a copy without any is ingest's.
        group = self.config.group
        options = SubscribeOptions(qos=QOS)
        client.subscribe([(self.topics.shared_filter(group, "stats"), options),
                          (self.topics.shared_filter(group, "event"), options),
                          (self.topics.shared_filter(group, "sample"), options),
                          (self.topics.shared_filter(group, "sample_chunk"), options),
                          (self.topics.filter("state"), options)])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if self.sweep.owns(mid):
            self.sweep.on_subscribed(mid, reason_codes)
            return
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("broker refused subscriptions (%s): check the collector's ACL on %s/dev/+/...",
                      ", ".join(failed), self.topics.prefix)
            return
        self.connected.set()
        self.sweep.start()  # retained stats/events left by a device: clear them

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.sweep.on_unsubscribed(mid)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.sweep.abandon()
        if not self._stop.is_set():
            log.warning("lost the broker %s (%s); reconnecting", self.config.broker_url, reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        """The network thread's share: an ordinary message is queued as it is, nothing more."""
        if not self._accepting.is_set():
            return  # shutting down: not acknowledged, so the broker sends it again after restart
        if msg.retain or getattr(msg.properties, "SubscriptionIdentifier", None) is not None:
            self._on_other_message(client, msg)
            return
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = repr(msg._topic)[:200]
        self._offer(InMessage(topic, msg.payload, msg.mid, msg.qos, self._generation, time.time()), topic)

    def _on_other_message(self, client, msg) -> None:
        """Retained messages and copies for the sweep (rare)."""
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = repr(msg._topic)[:200]
        ids = getattr(msg.properties, "SubscriptionIdentifier", None) or []
        if SWEEP_ID in ids or (msg.retain and not topic.endswith("/state")):
            self.sweep.on_message(msg)  # a copy for the sweep (or a retained stats/event): never stored
            if SWEEP_ID in ids:
                return
        self._offer(InMessage(topic, msg.payload, msg.mid, msg.qos, self._generation, time.time(), msg.retain),
                    topic)

    def _offer(self, message: InMessage, topic: str) -> None:
        if not self.queue.offer(message) and time.monotonic() - self._shed_logged > SHED_LOG_S:
            self._shed_logged = time.monotonic()
            log.warning("the writer is behind: shed %d QoS 0 message(s) so far (latest on %s); devices must "
                        "publish at QoS 1, which the broker holds for us instead", self.queue.shed, topic)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._accepting.set()
        self._work.start()
        self._writer.start()
        self._client.connect_async(*self.settings.address, **self.settings.connect_kwargs())
        self._client.loop_start()

    def wait_connected(self, timeout_s: float) -> bool:
        return self.connected.wait(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking messages, commit and acknowledge what was taken, then disconnect."""
        self._accepting.clear()
        self._stop.set()
        self._work.notify_stopping()  # a commit retrying a failing store gives up sooner
        if self._writer.ident is not None:
            self._writer.join(timeout_s)
        if self._writer.is_alive():
            log.error("the writer did not finish in %.0f s; unacknowledged messages will be redelivered", timeout_s)
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    def readiness(self) -> list[str]:
        """Why messages do not reach the store now (empty: they do)."""
        reasons = []
        if not self.connected.is_set():
            reasons.append(f"not connected to the broker {self.config.broker_url}")
        since = self._commit_since
        if since is not None and time.monotonic() - since > STALL_S:
            reasons.append(f"a commit has waited {time.monotonic() - since:.0f} s for the store")
        if self._store_error is not None:
            reasons.append(f"the last commit failed: {self._store_error}")
        return reasons

    # -- the writer ------------------------------------------------------------------------------
    def _build_writer(self) -> Writer | WriterProcess:
        """The work of a batch (``cloud.ingest_writer``): in a child process unless configured
        otherwise or the database lives in this process's memory."""
        local = lambda: Writer(self.store, self.handler, stopping=self._stop.is_set,  # noqa: E731
                               on_failure=self._store_failed)
        if not self.config.writer_process or in_memory(self.config.db_url):
            return local()
        return WriterProcess(self.config.db_url, self.config.db_timeout_s, self.handler,
                             on_failure=self._store_failed, local=local)

    def _store_failed(self, error: str) -> None:
        self.stats.store_failures += 1
        self._store_error = error

    def _write_loop(self) -> None:
        """Hand batches to the writer and acknowledge each once it is answered. A writer child
        gets the next batch before this thread collects the last (``depth`` 2): it commits one
        while this thread acknowledges the one before, instead of each waiting for the other."""
        work = self._work
        try:
            while not (self._stop.is_set() and self.queue.empty() and not work.pending):
                # with a batch at the writer, nothing waits for the next one to start
                items = self.queue.take(self.config.batch_max, 0.0 if work.pending else 0.1,
                                        self.config.batch_ms / 1000.0)
                if items:
                    self._submit(items)
                if work.pending and (work.pending >= work.depth or not items):
                    self._finish()
                elif not items and self._receipts:  # the backlog is gone: what was merged goes out now
                    self._send_receipts()
        finally:
            if self._receipts:
                self._send_receipts()
            self._work.close()

    def _submit(self, items: list[InMessage]) -> None:
        if not self._work.pending:
            self._commit_since = time.monotonic()
        try:
            self._work.submit([(m.topic, m.payload, m.received_t, m.retain) for m in items], items)
        except Exception:  # a bug must not stop ingest; the broker redelivers these later
            log.exception("failed to hand a batch of %d messages to the writer", len(items))

    def _finish(self) -> None:
        """The writer's answer for its oldest batch, then that batch's acknowledgements and receipts."""
        try:
            items, outcome = self._work.collect()
            self._process(items, outcome)
        except Exception:  # a bug must not stop ingest; the broker redelivers these later
            log.exception("failed to process a batch")
            time.sleep(0.1)  # a writer that keeps failing (its child cannot start) is not spun on
        finally:
            self._commit_since = time.monotonic() if self._work.pending else None

    def _process(self, items: list[InMessage], outcome: Outcome | None) -> None:
        if outcome is None:
            return  # stopping while the store is down: the broker redelivers later
        self._store_error = None
        for m in items:
            if m.qos > 0 and m.generation == self._generation:
                self._client.ack(m.mid, m.qos)
        self._receipts.add(outcome.named)
        if self._receipts.due(backlog=not self.queue.empty()):
            self._send_receipts()
        result = outcome.result
        self._count(items, outcome)
        if result.samples_ready and self._on_samples_ready is not None:
            try:  # staged in the store already: a failure here is retried by the maintenance sweep
                self._on_samples_ready(result.samples_ready)
            except Exception:
                log.exception("assembling %d field sample(s) failed; the maintenance sweep retries",
                              len(result.samples_ready))

    def _send_receipts(self) -> None:
        receipts = self._receipts.take()
        for topic, payload in receipts:
            self._client.publish(topic, payload, qos=QOS)
        self.stats.receipts += len(receipts)

    def _count(self, items: list[InMessage], outcome: Outcome) -> None:
        s, result = self.stats, outcome.result
        s.messages += len(items)
        s.batches += 1
        s.windows_new += result.windows_new
        s.events_new += result.events_new
        s.states += result.states
        s.rejects += result.rejects
        s.sample_pieces += result.samples_staged
        s.last_commit_t = time.time()
        # lag: from the oldest message's arrival to its commit; duplicates: redelivered windows
        s.extra["lag_s"] = s.last_commit_t - min(m.received_t for m in items)
        s.extra["duplicates"] = s.extra.get("duplicates", 0) + outcome.windows - result.windows_new
        if self._on_commit is not None:
            self._on_commit(items, result, s.last_commit_t)
