"""The ingest writer: a batch of raw MQTT messages in, committed, with what its receipts name.

``Writer`` does the work (decode, validate, commit with retries); ``Ingest``'s writer thread
owns acknowledging, receipts (``cloud.ingest_receipts``) and counting. By default the work runs in a child process
(``WriterProcess``, ``writer_process = true``): paho parses every packet in Python on its network
thread, which then needs a core of its own, and one interpreter lock shared with the writer
halved both (``docs/architecture.md``, "The collector at the cost of its broker client").

The child (``cloud.child``) opens its own store and builds its own handler from a ``WriterSpec``.
The writer thread hands it the next batch (``submit``) before it takes the answer to the last
(``collect``), so the child commits one batch while the parent acknowledges the one before
(``WriterProcess.depth``). Nothing is acknowledged to the broker before the child's answer, so
whatever happens to the child its batches are still in the parent: if the child dies (killed,
out of memory, a crash in a C extension) it is started again and the unanswered batches sent
again in order (the store keeps a window once by ``(device, boot, seq)``, so a batch committed
just before the crash is only counted as duplicates); after ``MAX_CRASHES`` in a row on one
batch, that batch is processed in the parent's thread instead, so one poisonous message cannot
stop ingest.
While the store fails, the child reports each failure at once (``stats.store_failures`` and
``/readyz`` follow it) and retries; at shutdown it gives up as the thread does.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from cloud.child import LOG_FORMAT, Child, ChildDied, Pipe, log_settings
from cloud.ingest_handler import IngestHandler
from cloud.store import Batch, BatchResult, Reject, Store, StoreDataError, open_store
from shared.codec import dumps
from shared.errors import StoreError
from shared.topics import Topics

log = logging.getLogger(__name__)

RETRY_MAX_S = 10.0
MAX_CRASHES = 3  # child deaths in a row on one batch before the parent processes it itself

Raw = tuple[str, bytes, float, bool]  # topic, payload, received_t, retained


@dataclass(slots=True)
class Outcome:
    """What one batch did: the store's result, what its receipts name, and the handler's counts."""

    result: BatchResult
    named: dict[str, tuple[list, list]]  # device -> ([(boot, seq) of windows], [(boot, seq) of events])
    windows: int  # windows of the batch the store kept or had already (new and duplicates; not too late)
    # a child's handler counts for the batch (``merge_counts``); a thread's handler counted them itself
    accepted: dict = field(default_factory=dict)
    rejected: dict = field(default_factory=dict)
    undecided: int = 0


class Writer:
    """Decode, validate and commit batches in this thread; ``process`` returns None only when told
    to stop while the store is down (nothing was committed: the broker redelivers).

    ``WriterProcess`` has the same interface (``start``, ``submit``, ``collect``, ``pending``,
    ``depth``, ``process``, ``notify_stopping``, ``close``), so ``Ingest`` drives either without
    asking which it has. ``submit(items, token)`` queues a batch; ``collect()`` gives the oldest
    one's ``(token, outcome)``, so an answer is never paired with another batch."""

    depth = 1  # batches worth submitting before collecting: here nothing runs beside the caller

    def __init__(self, store: Store, handler: IngestHandler, *, stopping: Callable[[], bool],
                 on_failure: Callable[[str], None], wait: Callable[[float], None] = time.sleep):
        self.store = store
        self.handler = handler
        self.topics = handler.topics
        self._stopping = stopping
        self._on_failure = on_failure  # told about each failed commit (then retried)
        self._wait = wait
        self._submitted: deque[tuple[list[Raw], object]] = deque()

    def start(self) -> None:
        """Nothing to start: the work runs in the caller's thread."""

    @property
    def pending(self) -> int:
        return len(self._submitted)

    def submit(self, items: list[Raw], token=None) -> None:
        """Queue a batch; ``collect`` processes the oldest (here, in the caller's thread)."""
        self._submitted.append((items, token))

    def collect(self) -> tuple[object, Outcome | None]:
        items, token = self._submitted.popleft()
        return token, self.process(items)

    def notify_stopping(self) -> None:
        """Nothing to tell: ``stopping`` is read directly."""

    def close(self, timeout_s: float = 10.0) -> None:
        """Nothing to close: the store is the caller's."""

    def process(self, items: list[Raw]) -> Outcome | None:
        batch = Batch()
        add = self.handler.add
        for topic, payload, received_t, retain in items:
            # an empty payload on a stats/event topic is the echo of a retained message being
            # cleared: nothing to store or confirm, only to acknowledge
            if payload or topic.endswith("/state"):
                add(batch, topic, payload, received_t, retain)
        result = self._commit(batch)
        if result is None:
            return None
        return Outcome(result, self._named(batch), len(batch.windows) - result.windows_late)

    @staticmethod
    def _named(batch: Batch) -> dict[str, tuple[list, list]]:
        """Per device, the windows and events this batch dealt with for good: stored, duplicates,
        too late, or refused as malformed (else the device would send those forever)."""
        named: dict[str, tuple[list, list]] = {}
        for rows, kind in ((batch.windows, 0), (batch.events, 1)):
            for row in rows:
                m = row.message
                named.setdefault(m["device"], ([], []))[kind].append((m["boot"], m["seq"]))
        for r in batch.rejects:  # the handler named the refused ones it could (IngestHandler.add)
            if r.ref is not None:
                device, kind, boot, seq = r.ref
                named.setdefault(device, ([], []))[kind == "event"].append((boot, seq))
        return named

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
                self._on_failure(str(exc)[:300])
                if self._stopping() and delay >= RETRY_MAX_S:
                    log.error("giving up on a batch at shutdown: %s", exc)
                    return None
                log.error("cannot commit a batch of %d messages: %s; retrying in %.1f s", len(batch), exc, delay)
                self._wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def _commit_one_by_one(self, batch: Batch) -> BatchResult:
        """Write each row alone; a row the database refuses becomes a Reject ('unstorable')."""
        totals, ready, late = [0, 0, 0, 0, 0], [], 0
        quota = batch.sample_quota_bytes
        singles = ([Batch(windows=[r]) for r in batch.windows] + [Batch(events=[r]) for r in batch.events]
                   + [Batch(states=[r]) for r in batch.states] + [Batch(rejects=[r]) for r in batch.rejects]
                   + [Batch(sample_headers=[r], sample_quota_bytes=quota) for r in batch.sample_headers]
                   + [Batch(sample_parts=[p], sample_quota_bytes=quota) for p in batch.sample_parts])
        for single in singles:
            rows = single.windows + single.events + single.states + single.sample_headers
            for r in rows:
                single.see(r.message["device"], r.received_t)
            try:
                res = self.store.write(single)
            except StoreDataError as exc:
                if single.sample_parts:
                    p = single.sample_parts[0]
                    res = self.store.write(Batch(rejects=[Reject.of(p.received_t, p.topic, "unstorable",
                                                                    str(exc)[:500], p.data)]))
                elif not rows:
                    log.error("the store refused a rejected message's record (%s); it is only logged", exc)
                    continue
                else:
                    r = rows[0]
                    body = dumps(r.message) if r.body is None else r.body.encode()
                    res = self.store.write(Batch(rejects=[Reject.of(r.received_t, f"device:{r.message['device']}",
                                                                    "unstorable", str(exc)[:500], body)]))
            for i, v in enumerate((res.windows_new, res.events_new, res.states, res.rejects, res.samples_staged)):
                totals[i] += v
            ready.extend(res.samples_ready)
            late += res.windows_late
        return BatchResult(*totals, tuple(ready), late)


# -- the child process -----------------------------------------------------------------------------
@dataclass(frozen=True)
class WriterSpec:
    """What the child needs to build the parent's store connection and handler (``cloud.child``)."""

    db_url: str
    db_timeout_s: float | None
    topic_prefix: str
    reject_log_interval_s: float
    sample_max_clip_bytes: int
    sample_quota_bytes: int | None
    log: tuple[int, str] = (logging.WARNING, LOG_FORMAT)

    @classmethod
    def of(cls, db_url: str, db_timeout_s: float | None, handler: IngestHandler) -> "WriterSpec":
        return cls(db_url, db_timeout_s, handler.topics.prefix, handler.reject_log.interval_s,
                   handler.sample_max_clip_bytes, handler.sample_quota_bytes, log_settings())

    def serve(self, pipe: Pipe) -> None:
        """The child's loop: batches until told to exit (or the parent is gone)."""
        handler = IngestHandler(Topics(self.topic_prefix), reject_log_interval_s=self.reject_log_interval_s,
                                sample_max_clip_bytes=self.sample_max_clip_bytes,
                                sample_quota_bytes=self.sample_quota_bytes)
        store = open_store(self.db_url, timeout_s=self.db_timeout_s)
        stopping = [False]
        pending: list = []  # what arrived while a retry waited: the next batch, an exit

        def wait(delay: float) -> None:  # a retry's pause; the parent may say it is stopping meanwhile
            message = pipe.receive(delay)
            if message is not None:
                stopping[0] = stopping[0] or message[0] in ("stopping", "exit")
                if message[0] != "stopping":
                    pending.append(message)

        writer = Writer(store, handler, stopping=lambda: stopping[0],
                        on_failure=lambda e: pipe.send(("failure", e)), wait=wait)
        pipe.settle()
        pipe.read_ahead()  # the parent sends the next batch before it reads this one's answer
        try:
            while True:
                message = pending.pop(0) if pending else pipe.receive()
                if message[0] == "stopping":
                    stopping[0] = True
                    continue
                if message[0] == "exit":
                    return
                outcome = writer.process(message[1])
                if outcome is not None:  # the handler's counts since the last batch travel with it
                    outcome.accepted, outcome.rejected, outcome.undecided = (handler.accepted, handler.rejected,
                                                                             handler.undecided)
                    handler.accepted, handler.rejected, handler.undecided = {}, {}, 0
                pipe.send(("done", outcome))
                pipe.collect()
        finally:
            store.close()


def in_memory(db_url: str) -> bool:
    """A database only this process can see (SQLite in memory): no child can write it."""
    return db_url.rstrip("/").endswith(":memory:") or db_url in ("", ":memory:")


def merge_counts(handler: IngestHandler, outcome: Outcome) -> None:
    """Add the counts a child's handler made for one batch to the parent's ``handler``."""
    for mine, theirs in ((handler.accepted, outcome.accepted), (handler.rejected, outcome.rejected)):
        for k, v in theirs.items():
            mine[k] = mine.get(k, 0) + v
    handler.undecided += outcome.undecided


class WriterProcess:
    """``Writer`` run by a child: ``submit(items)`` sends a batch, ``collect()`` gives the oldest
    unanswered one's ``Writer.process`` result, and the child's handler counts are added to
    ``handler``'s as the thread's would be. ``process`` is both."""

    depth = 2  # the child commits one batch while the parent acknowledges the one before

    def __init__(self, db_url: str, db_timeout_s: float | None, handler: IngestHandler, *,
                 on_failure: Callable[[str], None], local: Callable[[], Writer] | None):
        self.spec = WriterSpec.of(db_url, db_timeout_s, handler)
        self.handler = handler
        self._on_failure = on_failure  # told about each failed commit (the child retries)
        self._local = local  # builds the in-thread writer a poisonous batch falls back to
        self._fallback: Writer | None = None
        self._sent: deque[tuple[list[Raw], object]] = deque()  # sent to the child, not answered yet; oldest first
        self.child = Child("ingest writer")

    @property
    def pid(self) -> int | None:
        return self.child.pid

    def start(self) -> None:
        self.child.start(self.spec)

    def notify_stopping(self) -> None:
        """Tell a child retrying a failing store that the collector is stopping (it gives up as the thread does)."""
        try:
            self.child.send(("stopping",))
        except ChildDied:
            pass  # nothing is retrying

    @property
    def pending(self) -> int:
        return len(self._sent)

    def process(self, items: list[Raw]) -> Outcome | None:
        self.submit(items)
        return self.collect()[1]

    def submit(self, items: list[Raw], token=None) -> None:
        try:
            self.child.send(("batch", items))
        except ChildDied:
            pass  # collect() finds the child gone and sends its batches again
        self._sent.append((items, token))

    def collect(self) -> tuple[object, Outcome | None]:
        """The oldest batch's token and answer; a child that dies first is started again and
        given every unanswered batch again."""
        crashes = 0
        while crashes < MAX_CRASHES:
            try:
                while True:
                    kind, value = self.child.receive()
                    if kind != "failure":
                        _, token = self._sent.popleft()
                        if value is not None:
                            merge_counts(self.handler, value)
                        return token, value
                    self._on_failure(value)
            except ChildDied as exc:
                crashes += 1
                log.error("the writer process died (%s) with a batch of %d messages; %s", exc, len(self._sent[0][0]),
                          "starting it again" if crashes < MAX_CRASHES else "processing that batch here")
                self._restart(skip=0 if crashes < MAX_CRASHES else 1)
        items, token = self._sent.popleft()  # the new child has every later batch already
        if self._fallback is None:
            self._fallback = self._local()
        return token, self._fallback.process(items)

    def _restart(self, skip: int) -> None:
        """A new child, sent the unanswered batches but the first ``skip`` again."""
        self.child.reap()
        self.child.start(self.spec)
        for i, (items, _) in enumerate(self._sent):
            if i >= skip:
                try:
                    self.child.send(("batch", items))
                except ChildDied:
                    return  # the next receive finds it gone

    def close(self, timeout_s: float = 10.0) -> None:
        self.child.close(timeout_s)
