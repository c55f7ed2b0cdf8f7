"""The PostgreSQL engine (psycopg 3): the same schema as SQLite, for several collectors.

Select a schema with libpq options in the URL:
``postgresql://user@host/db?options=-csearch_path%3Dharken``. A dropped connection is
reopened on the next call; the failing call raises ``StoreError``.

A database that is slow, or gone without a word, must not hang the collector. Three bounds:
- ``statement_timeout`` (``timeout_s``): the server cancels a statement that runs longer;
- TCP keepalives and ``tcp_user_timeout`` (libpq): a peer that stopped answering is noticed
  within about 30 s even while idle (unless the URL sets them itself);
- a deadline of our own: a transaction that gets no answer for ``timeout_s`` + 5 s (a server
  that cannot even cancel, a half-open connection whose peer keeps the socket alive) has its
  socket shut down by a watchdog, which fails the call at once; the next call reconnects.
Migrations run without these limits (building an index on a big table takes its time).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict

from cloud.store.base import DEADLINE_GRACE_S, StoreConflict, StoreDataError, safe_url
from cloud.store.sql import SqlStore
from shared.errors import StoreError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
DEFAULT_TIMEOUT_S = 30.0
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
              "tcp_user_timeout": 30000}
_MIGRATION_LOCK = 0x6861726B  # pg_advisory_xact_lock key for "hark"
DATA_ERRORS = (psycopg.DataError, psycopg.IntegrityError, OverflowError, UnicodeEncodeError, ValueError)
CONFLICTS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


class PostgresStore(SqlStore):
    dialect = "postgres"
    GREATEST = "GREATEST"
    DB_NOW = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"  # the server's clock

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S):
        super().__init__(url)
        self.timeout_s = timeout_s
        self._conn: psycopg.Connection | None = None
        self._busy_since: float | None = None  # monotonic start of the transaction under way
        self._migrating = False
        self._cut = 0  # connections the watchdog has cut
        self._closed = threading.Event()
        self._connection()
        self._migrating = True
        try:
            self._migrate()
        finally:
            self._migrating = False
        threading.Thread(target=self._watch, name="harken-pg-deadline", daemon=True).start()

    def _params(self) -> dict:
        params = conninfo_to_dict(self.url)
        for key, value in KEEPALIVES.items():
            params.setdefault(key, value)
        return params

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, **self._params())
                self._conn.execute(f"SET statement_timeout = {int(self.timeout_s * 1000)}")
                self._conn.execute(f"SET idle_in_transaction_session_timeout = {int((self.timeout_s + 30) * 1000)}")
            except psycopg.Error as exc:
                if self._conn is not None:
                    self._conn.close()
                raise StoreError(f"cannot connect to the PostgreSQL store {safe_url(self.url)}: "
                                 f"{str(exc).strip()}; check the URL and that the server is up") from exc
        return self._conn

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    @contextmanager
    def _transaction(self, write: bool):
        cut_before = self._cut
        self._busy_since = time.monotonic()
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                if self._migrating:
                    cur.execute("SET LOCAL statement_timeout = 0")
                yield cur
        except CONFLICTS as exc:  # before DATA_ERRORS: a serialisation failure is not bad data
            raise StoreConflict(f"PostgreSQL store {safe_url(self.url)}: {str(exc).strip()}; another "
                                "writer got there first, retry") from exc
        except DATA_ERRORS as exc:
            raise StoreDataError(f"PostgreSQL store {safe_url(self.url)} cannot store this data: "
                                 f"{str(exc).strip()}") from exc
        except psycopg.Error as exc:
            if self._cut != cut_before:
                raise StoreError(f"PostgreSQL store {safe_url(self.url)} did not answer within "
                                 f"{self.timeout_s + DEADLINE_GRACE_S:.0f} s; the connection was cut and will be "
                                 "reopened") from exc
            raise StoreError(f"PostgreSQL store {safe_url(self.url)}: {str(exc).strip()}") from exc
        finally:
            self._busy_since = None

    def _watch(self) -> None:
        """Cut the connection of a transaction that has waited past the deadline."""
        deadline = self.timeout_s + DEADLINE_GRACE_S
        while not self._closed.wait(min(1.0, deadline / 4)):
            since, conn = self._busy_since, self._conn
            if since is None or self._migrating or conn is None or time.monotonic() - since < deadline:
                continue
            self._cut += 1
            log.error("PostgreSQL store %s: no answer for %.0f s; cutting the connection", safe_url(self.url),
                      time.monotonic() - since)
            _shutdown_socket(conn)
            self._busy_since = None

    def _lock_migrations(self, cur) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))

    def _snapshot(self, cur) -> None:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self._conn is not None:
                self._conn.close()


def _shutdown_socket(conn: psycopg.Connection) -> None:
    """Make a blocked read on ``conn`` fail now (another thread may be inside it)."""
    try:
        fd = os.dup(conn.pgconn.socket)
    except Exception:  # closed meanwhile: nothing to cut
        return
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()
