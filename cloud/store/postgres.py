"""The PostgreSQL engine (psycopg 3): the same schema as SQLite, for several collectors.

Select a schema with libpq options in the URL:
``postgresql://user@host/db?options=-csearch_path%3Dharken``. A dropped connection is
reopened on the next call; the failing call raises ``StoreError``.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
import psycopg

from cloud.store.base import StoreDataError, safe_url
from cloud.store.sql import SqlStore
from shared.errors import StoreError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
_MIGRATION_LOCK = 0x6861726B  # pg_advisory_xact_lock key for "hark"
DATA_ERRORS = (psycopg.DataError, psycopg.IntegrityError, OverflowError, UnicodeEncodeError, ValueError)


class PostgresStore(SqlStore):
    dialect = "postgres"
    GREATEST = "GREATEST"

    def __init__(self, url: str):
        super().__init__(url)
        self._conn: psycopg.Connection | None = None
        self._connection()
        self._migrate()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
            except psycopg.Error as exc:
                raise StoreError(f"cannot connect to the PostgreSQL store {safe_url(self.url)}: "
                                 f"{str(exc).strip()}; check the URL and that the server is up") from exc
        return self._conn

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    @contextmanager
    def _transaction(self, write: bool):
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                yield cur
        except DATA_ERRORS as exc:
            raise StoreDataError(f"PostgreSQL store {safe_url(self.url)} cannot store this data: "
                                 f"{str(exc).strip()}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store {safe_url(self.url)}: {str(exc).strip()}") from exc

    def _lock_migrations(self, cur) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))

    def _snapshot(self, cur) -> None:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
