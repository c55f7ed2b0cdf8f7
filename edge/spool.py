"""The on-disk spool: messages wait here until the broker acknowledges them.

SQLite in WAL mode (a kill -9 loses nothing already committed), bounded in bytes: when a
new message does not fit, the oldest ones are dropped and counted, and the count is
reported in the next window (``software.spool_dropped_windows``) and in the reported
state. A row leaves only through ``ack``: on the broker's PUBACK, or — for a row with a
``ref`` (a window or an event) once the collector sends receipts — on the collector's receipt
naming it (``shared.receipts``). A small ``meta`` table keeps counters that must survive
restarts in the same transaction as the rows (the last window ``seq``, the dropped count,
whether receipts come).
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Callable, NamedTuple

from shared.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

ROW_OVERHEAD_BYTES = 64  # rough cost of a row beyond its topic and payload
_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
                                  payload BLOB NOT NULL, size INTEGER NOT NULL, ref TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_REF_INDEX = "CREATE INDEX IF NOT EXISTS spool_ref ON spool (ref) WHERE ref IS NOT NULL"
# the ids alone, in order: ``peek`` skips thousands of rows awaiting receipts without reading their pages
_ORDER_INDEX = "CREATE INDEX IF NOT EXISTS spool_order ON spool (id)"


class Spooled(NamedTuple):
    id: int
    topic: str
    payload: bytes
    ref: str | None = None  # how a receipt names it (shared.receipts); None: the PUBACK is enough


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
        self.exclusive = False  # held by this process alone: the disk had no room for WAL's shared memory
        try:
            self._db = self._connect(exclusive=False)
        except sqlite3.Error as exc:
            try:
                self._db = self._connect(exclusive=True)
            except sqlite3.Error:
                raise StoreError(f"cannot open the spool {self.path}: {exc}; free some space if the disk is full, "
                                 "or delete it if the disk was corrupted (unsent windows are lost)") from exc
            self.exclusive = True
            log.warning("spool %s: %s at open (is the disk full?); opened for this process alone until it restarts",
                        self.path, exc)
        try:
            self._bytes, self._count = self._db.execute(
                "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM spool").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the spool {self.path}: {exc}") from exc

    def _connect(self, exclusive: bool) -> sqlite3.Connection:
        """Open the database in WAL mode. A clean close removes the WAL and its shared-memory file, and a
        full disk cannot give the 32 KiB the latter needs at the next open; ``exclusive`` keeps that
        index in this process's memory instead (no other process can read the spool meanwhile)."""
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            if exclusive:
                db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            if "ref" not in {row[1] for row in db.execute("PRAGMA table_info(spool)")}:
                db.execute("ALTER TABLE spool ADD COLUMN ref TEXT")  # a spool from before receipts
            db.execute(_REF_INDEX)
            db.execute(_ORDER_INDEX)
        except BaseException:
            db.close()
            raise
        return db

    # -- writing -------------------------------------------------------------------------
    def fits(self, topic: str, payload: bytes) -> bool:
        """Whether a message of this size can ever be spooled (``put`` refuses it otherwise)."""
        return _row_size(topic, payload) <= self.max_bytes

    def put(self, topic: str, payload: bytes, *, meta: dict[str, int] | None = None, ref: str | None = None) -> int:
        """Append one message (and set ``meta`` counters atomically with it); returns its id.
        ``ref`` names it in the collector's receipts."""
        size = _row_size(topic, payload)
        if size > self.max_bytes:
            raise StoreError(f"a {len(payload)}-byte message does not fit a {self.max_bytes}-byte spool; "
                             "raise spool_max_bytes")
        with self._lock, self._transaction():
            dropped = self._make_room(size)
            cur = self._db.execute("INSERT INTO spool (topic, payload, size, ref) VALUES (?, ?, ?, ?)",
                                   (topic, sqlite3.Binary(payload), size, ref))
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
            if not exclude:
                rows = self._db.execute("SELECT id, topic, payload, ref FROM spool ORDER BY id LIMIT ?",
                                        (limit,)).fetchall()
            else:  # ids first, from their index: the excluded rows (thousands awaiting receipts) are never read
                ids = [i for (i,) in self._db.execute("SELECT id FROM spool INDEXED BY spool_order ORDER BY id LIMIT ?",
                                                      (limit + len(exclude),)) if i not in exclude][:limit]
                rows = self._db.execute(f"SELECT id, topic, payload, ref FROM spool WHERE id IN "
                                        f"({','.join('?' * len(ids))}) ORDER BY id", ids).fetchall() if ids else []
        return [Spooled(int(i), t, bytes(p), r) for i, t, p, r in rows]

    def ids_of(self, refs: list[str]) -> list[int]:
        """The ids of the rows these refs name (rows already gone are skipped)."""
        out: list[int] = []
        with self._lock:
            try:
                for start in range(0, len(refs), 500):  # SQLite caps the parameters of one statement
                    part = refs[start:start + 500]
                    out += [int(i) for (i,) in self._db.execute(
                        f"SELECT id FROM spool WHERE ref IN ({','.join('?' * len(part))})", part)]
            except sqlite3.Error as exc:
                raise StoreError(f"spool {self.path}: {exc}") from exc
        return out

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

