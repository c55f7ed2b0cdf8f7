"""The spool's flusher: sends spooled messages while connected, and deletes each once it is safe.

At most ``max_inflight`` messages are unacknowledged at once. Sends are spaced by
``1 / rate_per_s`` seconds with ±50 % jitter, and the first send after a reconnect waits a
random fraction of that interval, so a fleet coming back does not hit the broker in lockstep.
A message unacknowledged for ``ack_timeout_s`` of connected time is sent again (the collector
stores each window once, however often it arrives). A message whose deletion fails (a full
disk) is kept out of the sends and its deletion retried every ``retry_delete_s``; nothing
that runs in paho's thread raises.

Receipts. A PUBACK says the broker has a message, and a broker can lose what it acknowledged
(``shared.receipts``). Once the collector has sent a first receipt (``confirm``; remembered in
the spool), a row with a ``ref`` (a window or an event) stays in the spool after its PUBACK,
out of the sends, until a receipt names it. Such a row is sent again when the collector
confirmed a row sent *after* it at least ``resend_after_s`` ago (replicas and batches may
confirm slightly out of order; a row still missing then was lost on the way), and at the
agent's next start. While no receipt comes at all (the collector is down), nothing is resent.
"""
from __future__ import annotations

import collections
import functools
import logging
import random
import threading
import time
from typing import Callable

from edge.spool import Spool, Spooled
from shared.errors import StoreError

log = logging.getLogger(__name__)

Publish = Callable[..., int]  # publish(topic, payload, on_ack=callback) -> mid
RESEND_AFTER_S = 30.0


class SpoolFlusher:
    """``start()`` a thread that sends ``spool``'s rows through ``publish`` while ``connected``."""

    def __init__(self, spool: Spool, publish: Publish, connected: threading.Event, *, rate_per_s: float,
                 max_inflight: int, ack_timeout_s: float = 60.0, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic, retry_delete_s: float = 1.0,
                 resend_after_s: float = RESEND_AFTER_S):
        self.spool = spool
        self.rate_per_s = float(rate_per_s)
        self.max_inflight = int(max_inflight)
        self.ack_timeout_s = float(ack_timeout_s)
        self.retry_delete_s = float(retry_delete_s)
        self.resend_after_s = float(resend_after_s)
        self._publish = publish
        self._connected = connected
        self._rng = rng or random.Random()
        self._clock = clock
        self._cond = threading.Condition()
        self._inflight: dict[int, tuple[float, int]] = {}  # spool id → (when sent, send order)
        self._awaiting: dict[int, int] = {}  # acknowledged by the broker, waiting for its receipt: id → send order
        self._undeleted: set[int] = set()  # acknowledged or confirmed, deletion pending: retried, never re-sent
        self._deletes_failing = False
        self._next_delete_retry = 0.0
        self._order = 0  # send order of the last message handed to publish
        self._confirmed_order = 0  # the highest send order a receipt named
        self._settled_order = 0  # ... as it was resend_after_s ago
        self._marks: collections.deque[tuple[float, int]] = collections.deque()  # (when, _confirmed_order)
        self.receipts = spool.meta("receipts") == 1
        self._receipts_saved = self.receipts
        self._connected_since = clock()
        self._next_send = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = self.acked = self.refused = self.confirmed = self.resent = 0

    def start(self) -> "SpoolFlusher":
        self._thread = threading.Thread(target=self._run, name="spool-flusher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def notify(self) -> None:
        """Something changed (a new message, a connection): look again."""
        with self._cond:
            self._cond.notify_all()

    def on_connected(self) -> None:
        with self._cond:
            now = self._clock()
            self._connected_since = now
            self._next_send = now + self._rng.uniform(0.0, 1.0 / self.rate_per_s)
            self._cond.notify_all()

    @property
    def inflight(self) -> int:
        with self._cond:
            return len(self._inflight)

    @property
    def awaiting(self) -> int:
        """Messages the broker acknowledged that wait for the collector's receipt."""
        with self._cond:
            return len(self._awaiting)

    @property
    def undeleted(self) -> int:
        """Messages acknowledged (or confirmed) whose deletion from the spool failed (retried)."""
        with self._cond:
            return len(self._undeleted)

    def wait_drained(self, timeout_s: float) -> bool:
        """Block until the spool is empty (every message acknowledged or confirmed) or the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.spool) > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    # -- receipts (the agent's control thread) ------------------------------------------------
    def confirm(self, refs: list[str]) -> int:
        """The collector has dealt with these messages for good: delete their rows; returns how many
        rows they named. The first receipt switches the flusher to keeping rows until theirs."""
        try:
            ids = self.spool.ids_of(refs)
        except StoreError as exc:  # the rows stay: sent again once later ones are confirmed
            log.warning("spool: cannot look up %d confirmed message(s): %s", len(refs), exc)
            ids = []
        with self._cond:
            if not self.receipts:
                self.receipts = True
                log.info("the collector confirms what it stores: windows and events now stay in the spool "
                         "until their receipt")
            for i in ids:
                sent = self._inflight.pop(i, None)
                order = self._awaiting.pop(i, sent[1] if sent else 0)
                self._confirmed_order = max(self._confirmed_order, order)
            self._marks.append((self._clock(), self._confirmed_order))
            self._undeleted.update(ids)  # out of the sends until the row is gone
            self.confirmed += len(ids)
        for i in ids:
            if self._delete(i):
                with self._cond:
                    self._undeleted.discard(i)
        self._save_receipts()
        self.notify()
        return len(ids)

    def _save_receipts(self) -> None:
        if self.receipts and not self._receipts_saved:
            try:
                self.spool.set_meta("receipts", 1)
                self._receipts_saved = True
            except StoreError as exc:  # tried again at the next receipt
                log.warning("spool: cannot record that receipts come: %s", exc)

    # -- the sending thread --------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            row = self._next_row()
            if row is None:
                continue
            try:
                self._publish(row.topic, row.payload, on_ack=functools.partial(self._acked, row.id, row.ref))
                self.sent += 1
            except Exception:  # never let one bad publish stop the spool
                log.exception("sending spooled message %d failed; it stays in the spool", row.id)
                with self._cond:
                    self._inflight.pop(row.id, None)
                self._stop.wait(1.0)

    def _next_row(self) -> Spooled | None:
        """Wait until a message may be sent; mark it in flight and return it (None: look again)."""
        with self._cond:
            now = self._clock()
            self._expire(now)
            self._retry_deletes(now)
            self._resend_unconfirmed(now)
            if not self._connected.is_set() or len(self._inflight) >= self.max_inflight:
                self._cond.wait(0.2)
                return None
            if now < self._next_send:
                self._cond.wait(self._next_send - now)
                return None
            rows = self.spool.peek(1, exclude=set(self._inflight) | self._undeleted | set(self._awaiting))
            if not rows:
                self._cond.wait(min(1.0, self.ack_timeout_s / 2) if self._inflight else 1.0)
                return None
            self._order += 1
            self._inflight[rows[0].id] = (now, self._order)
            interval = 1.0 / self.rate_per_s
            self._next_send = now + interval * self._rng.uniform(0.5, 1.5)
            return rows[0]

    def _expire(self, now: float) -> None:
        since = self._connected_since
        stale = [i for i, (t, _) in self._inflight.items() if now - max(t, since) > self.ack_timeout_s]
        for i in stale:
            del self._inflight[i]
        if stale:
            log.warning("%d spooled message(s) unacknowledged for %.0f s; sending them again",
                        len(stale), self.ack_timeout_s)

    def _resend_unconfirmed(self, now: float) -> None:
        """Rows sent before one confirmed ``resend_after_s`` ago and still unconfirmed go again."""
        while self._marks and self._marks[0][0] <= now - self.resend_after_s:
            self._settled_order = max(self._settled_order, self._marks.popleft()[1])
        lost = [i for i, order in self._awaiting.items() if order < self._settled_order]
        for i in lost:
            del self._awaiting[i]
        if lost:
            self.resent += len(lost)
            log.warning("%d message(s) the broker acknowledged never reached the collector, which confirmed later "
                        "ones; sending them again", len(lost))

    def _retry_deletes(self, now: float) -> None:
        if not self._undeleted or now < self._next_delete_retry:
            return
        self._next_delete_retry = now + self.retry_delete_s
        for row_id in sorted(self._undeleted):
            if not self._delete(row_id):
                return  # still failing: try again later
            self._undeleted.discard(row_id)

    def _delete(self, row_id: int) -> bool:
        try:
            self.spool.ack(row_id)
        except Exception as exc:  # StoreError from a full disk, or anything else: never lose the thread
            log.log(logging.DEBUG if self._deletes_failing else logging.WARNING,
                    "spool: cannot delete sent message %d (%s); retrying every %.0f s", row_id, exc,
                    self.retry_delete_s)
            self._deletes_failing = True
            return False
        if self._deletes_failing:
            self._deletes_failing = False
            log.info("spool: sent messages deleted after all")
        return True

    def _acked(self, row_id: int, ref: str | None, ok: bool, reason: str) -> None:
        # Runs in the network thread. A refused message would be refused again, so it goes too.
        with self._cond:
            if ok and ref is not None and self.receipts:  # kept until the collector's receipt
                sent = self._inflight.pop(row_id, None)
                if sent is not None:  # (None: its receipt came first, or it timed out and goes again)
                    self._awaiting[row_id] = sent[1]
                self.acked += 1
                self._cond.notify_all()
                return
        deleted = self._delete(row_id)
        with self._cond:
            self._inflight.pop(row_id, None)
            if not deleted:
                self._undeleted.add(row_id)
            if ok:
                self.acked += 1
            else:
                self.refused += 1
            self._cond.notify_all()
