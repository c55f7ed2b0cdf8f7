"""The on-disk spool: messages wait here until the broker acknowledges them.

SQLite in WAL mode (a kill -9 loses nothing already committed), bounded in bytes: when a
new message does not fit, the oldest ones are dropped and counted, and the count is
reported in the next window (``software.spool_dropped_windows``) and in the reported
state. A row leaves only through ``ack`` — the broker's PUBACK for it. A small ``meta``
table keeps counters that must survive restarts in the same transaction as the rows
(the last window ``seq``, the dropped count).
"""
from __future__ import annotations

import functools
import logging
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple

from shared.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

ROW_OVERHEAD_BYTES = 64  # rough cost of a row beyond its topic and payload
_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
                                  payload BLOB NOT NULL, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Spooled(NamedTuple):
    id: int
    topic: str
    payload: bytes


def _row_size(topic: str, payload: bytes) -> int:
    return len(payload) + len(topic) + ROW_OVERHEAD_BYTES


class Spool:
    """A bounded FIFO of (topic, payload) on disk; thread-safe."""

    def __init__(self, path: str | Path, max_bytes: int):
        if max_bytes < 1024:
            raise ConfigError(f"spool max_bytes {max_bytes} is too small; give at least 1024 bytes")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._bytes, self._count = self._db.execute(
                "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM spool").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the spool {self.path}: {exc}; delete it if the disk was corrupted "
                             "(unsent windows are lost)") from exc

    # -- writing -------------------------------------------------------------------------
    def fits(self, topic: str, payload: bytes) -> bool:
        """Whether a message of this size can ever be spooled (``put`` refuses it otherwise)."""
        return _row_size(topic, payload) <= self.max_bytes

    def put(self, topic: str, payload: bytes, *, meta: dict[str, int] | None = None) -> int:
        """Append one message (and set ``meta`` counters atomically with it); returns its id."""
        size = _row_size(topic, payload)
        if size > self.max_bytes:
            raise StoreError(f"a {len(payload)}-byte message does not fit a {self.max_bytes}-byte spool; "
                             "raise spool_max_bytes")
        with self._lock, self._transaction():
            dropped = self._make_room(size)
            cur = self._db.execute("INSERT INTO spool (topic, payload, size) VALUES (?, ?, ?)",
                                   (topic, sqlite3.Binary(payload), size))
            for key, value in (meta or {}).items():
                self._set_meta(key, value)
            if dropped:
                self._set_meta("dropped", self._get_meta("dropped") + dropped)
                self._set_meta("dropped_total", self._get_meta("dropped_total") + dropped)
            self._bytes += size
            self._count += 1
            return int(cur.lastrowid)

    def put_many(self, items: list[tuple[str, bytes]]) -> list[int]:
        """Append several messages in one transaction, all or none, and never by dropping older
        ones (a sample's header and chunks travel together); StoreError when they do not fit."""
        size = sum(_row_size(t, p) for t, p in items)
        with self._lock:
            if self._bytes + size > self.max_bytes:
                raise StoreError(f"spool {self.path.name} is full ({self._bytes} of {self.max_bytes} bytes) for "
                                 f"{size} more; it drains while the broker is reachable")
            with self._transaction():
                ids = [int(self._db.execute("INSERT INTO spool (topic, payload, size) VALUES (?, ?, ?)",
                                            (t, sqlite3.Binary(p), _row_size(t, p))).lastrowid) for t, p in items]
                self._bytes += size
                self._count += len(items)
        return ids

    def _make_room(self, size: int) -> int:
        dropped = 0
        while self._count and self._bytes + size > self.max_bytes:
            row = self._db.execute("SELECT id, size FROM spool ORDER BY id LIMIT 1").fetchone()
            self._db.execute("DELETE FROM spool WHERE id = ?", (row[0],))
            self._bytes -= row[1]
            self._count -= 1
            dropped += 1
        if dropped:
            log.warning("spool full (%d bytes): dropped the %d oldest message(s)", self.max_bytes, dropped)
        return dropped

    def ack(self, row_id: int) -> bool:
        """The broker has the message: remove it. False if it was already gone (dropped)."""
        with self._lock, self._transaction():
            row = self._db.execute("SELECT size FROM spool WHERE id = ?", (row_id,)).fetchone()
            if row is None:
                return False
            self._db.execute("DELETE FROM spool WHERE id = ?", (row_id,))
            self._bytes -= row[0]
            self._count -= 1
            return True

    # -- reading -------------------------------------------------------------------------
    def peek(self, limit: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[Spooled]:
        """The oldest ``limit`` messages whose ids are not in ``exclude`` (those in flight)."""
        with self._lock:
            rows = self._db.execute("SELECT id, topic, payload FROM spool ORDER BY id LIMIT ?",
                                    (limit + len(exclude),)).fetchall()
        out = [Spooled(int(i), t, bytes(p)) for i, t, p in rows if i not in exclude]
        return out[:limit]

    def take_dropped(self) -> int:
        """Messages dropped since the last call (reset to zero); for the next window."""
        with self._lock, self._transaction():
            n = self._get_meta("dropped")
            if n:
                self._set_meta("dropped", 0)
            return n

    def meta(self, key: str, default: int = 0) -> int:
        with self._lock:
            return self._get_meta(key, default)

    def set_meta(self, key: str, value: int) -> None:
        with self._lock, self._transaction():
            self._set_meta(key, value)

    @property
    def dropped_total(self) -> int:
        return self.meta("dropped_total")

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- internals -----------------------------------------------------------------------
    def _transaction(self):
        return _Transaction(self._db, self.path, on_rollback=self._recount)

    def _recount(self) -> None:
        """After a rollback the counters a transaction changed in memory are wrong: read them back."""
        try:
            self._bytes, self._count = self._db.execute(
                "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM spool").fetchone()
        except sqlite3.Error as exc:
            log.error("spool %s: cannot recount after a failed write: %s", self.path, exc)

    def _get_meta(self, key: str, default: int = 0) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else default

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, int(value)))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error, sqlite errors translated.

    A COMMIT that fails (a full disk: SQLITE_FULL) may leave the transaction open; it is rolled
    back explicitly, as SQLite advises, or every later BEGIN would fail even once space returns.
    """

    def __init__(self, db: sqlite3.Connection, path: Path, on_rollback: Callable[[], None] = lambda: None):
        self.db, self.path, self.on_rollback = db, path, on_rollback

    def __enter__(self):
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"spool {self.path}: {exc}") from exc
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error as err:
                self._rollback()
                raise StoreError(f"spool {self.path}: {err}; check the disk (full or read-only?)") from err
        self._rollback()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"spool {self.path}: {exc}; check the disk (full or read-only?)") from exc

    def _rollback(self) -> None:
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error as err:  # SQLite may have rolled back by itself already
            log.debug("spool %s: rollback: %s", self.path, err)
        self.on_rollback()


Publish = Callable[..., int]  # publish(topic, payload, on_ack=callback) -> mid


class SpoolFlusher:
    """Sends spooled messages while connected, paced, and deletes each on its PUBACK.

    At most ``max_inflight`` messages are unacknowledged at once. Sends are spaced by
    ``1 / rate_per_s`` seconds with ±50 % jitter, and the first send after a reconnect waits
    a random fraction of that interval, so a fleet coming back does not hit the broker in
    lockstep. A message unacknowledged for ``ack_timeout_s`` of connected time is sent again
    (the collector stores each window once, however often it arrives). A message whose
    deletion fails after its PUBACK (a full disk) is kept out of the sends and its deletion
    retried every ``retry_delete_s``; ``_acked`` never raises (it runs in paho's thread).
    """

    def __init__(self, spool: Spool, publish: Publish, connected: threading.Event, *, rate_per_s: float,
                 max_inflight: int, ack_timeout_s: float = 60.0, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic, retry_delete_s: float = 1.0):
        self.spool = spool
        self.rate_per_s = float(rate_per_s)
        self.max_inflight = int(max_inflight)
        self.ack_timeout_s = float(ack_timeout_s)
        self._publish = publish
        self._connected = connected
        self._rng = rng or random.Random()
        self._clock = clock
        self._cond = threading.Condition()
        self._inflight: dict[int, float] = {}  # spool id → when it was sent
        self._undeleted: set[int] = set()  # acknowledged, but the deletion failed: retried, never re-sent
        self.retry_delete_s = float(retry_delete_s)
        self._next_delete_retry = 0.0
        self._connected_since = clock()
        self._next_send = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = self.acked = self.refused = 0

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
    def undeleted(self) -> int:
        """Messages the broker acknowledged whose deletion from the spool failed (retried)."""
        with self._cond:
            return len(self._undeleted)

    def wait_drained(self, timeout_s: float) -> bool:
        """Block until the spool is empty (every message acknowledged) or the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.spool) > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    # -- the sending thread --------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            row = self._next_row()
            if row is None:
                continue
            try:
                self._publish(row.topic, row.payload, on_ack=functools.partial(self._acked, row.id))
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
            if not self._connected.is_set() or len(self._inflight) >= self.max_inflight:
                self._cond.wait(0.2)
                return None
            if now < self._next_send:
                self._cond.wait(self._next_send - now)
                return None
            rows = self.spool.peek(1, exclude=set(self._inflight) | self._undeleted)
            if not rows:
                self._cond.wait(min(1.0, self.ack_timeout_s / 2) if self._inflight else 1.0)
                return None
            self._inflight[rows[0].id] = now
            interval = 1.0 / self.rate_per_s
            self._next_send = now + interval * self._rng.uniform(0.5, 1.5)
            return rows[0]

    def _expire(self, now: float) -> None:
        since = self._connected_since
        stale = [i for i, t in self._inflight.items() if now - max(t, since) > self.ack_timeout_s]
        for i in stale:
            del self._inflight[i]
        if stale:
            log.warning("%d spooled message(s) unacknowledged for %.0f s; sending them again",
                        len(stale), self.ack_timeout_s)

    def _retry_deletes(self, now: float) -> None:
        if not self._undeleted or now < self._next_delete_retry:
            return
        self._next_delete_retry = now + self.retry_delete_s
        for row_id in sorted(self._undeleted):
            if not self._delete(row_id):
                return  # still failing: try again later
            self._undeleted.discard(row_id)
        log.info("spool: acknowledged messages deleted after all")

    def _delete(self, row_id: int) -> bool:
        try:
            self.spool.ack(row_id)
            return True
        except Exception as exc:  # StoreError from a full disk, or anything else: never lose the thread
            first = not self._undeleted
            log.log(logging.WARNING if first else logging.DEBUG,
                    "spool: cannot delete acknowledged message %d (%s); retrying every %.0f s", row_id, exc,
                    self.retry_delete_s)
            return False

    def _acked(self, row_id: int, ok: bool, reason: str) -> None:
        # Runs in the network thread: a refused message would be refused again, so it goes too.
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
