"""The SQLite engine: the embedded default. WAL, so readers (the CLI, the API) never block
the collector's writer; synchronous=FULL, so a committed batch survives a crash before the
collector acknowledges it to the broker."""
from __future__ import annotations

import logging
import sqlite3
from contextlib import contextmanager
from pathlib import Path

from cloud.store.base import StoreDataError
from cloud.store.sql import SqlStore
from shared.errors import StoreError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30.0
DATA_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, OverflowError, UnicodeEncodeError, ValueError)


class SqliteStore(SqlStore):
    dialect = "sqlite"
    GREATEST = "MAX"
    DB_NOW = "((julianday('now') - 2440587.5) * 86400.0)"  # the host's clock, to the millisecond

    def __init__(self, url: str, path: str):
        super().__init__(url)
        self.path = path
        try:
            if path != ":memory:":
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(Path(path).expanduser()) if path != ":memory:" else path,
                                         isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the SQLite store {path}: {exc}; check the path and its permissions") \
                from exc
        self._migrate()

    @contextmanager
    def _transaction(self, write: bool):
        try:
            self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: cannot begin a transaction ({exc})") from exc
        try:
            yield self._conn.cursor()
        except DATA_ERRORS as exc:
            self._rollback()
            raise StoreDataError(f"SQLite store {self.path} cannot store this data: {exc}") from exc
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc
        except BaseException:
            self._rollback()
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"SQLite store {self.path}: commit failed ({exc})") from exc

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.debug("rollback failed", exc_info=True)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
