"""The collector's store: ``open_store(url)`` gives a SQLite or PostgreSQL ``Store``.

    sqlite:///relative/or/./path.db     sqlite:////absolute/path.db     a plain file path
    postgresql://user@host:5432/db      (psycopg 3; ``?options=-csearch_path%3Dschema``)
"""
from __future__ import annotations

from cloud.store.base import (FLEET, Batch, BatchResult, Lease, LeaseLost, Received, Reject, RollupResult, Store,
                              StoreConflict, StoreDataError, safe_url)
from shared.errors import StoreError

DEFAULT_URL = "sqlite:///./harken.db"

__all__ = ["FLEET", "Batch", "BatchResult", "Lease", "LeaseLost", "Received", "Reject", "RollupResult", "Store",
           "StoreConflict", "StoreDataError", "open_store", "DEFAULT_URL", "safe_url"]


def open_store(url: str, *, timeout_s: float | None = None) -> Store:
    """Open (creating and migrating if needed) the store at ``url``.

    ``timeout_s``: PostgreSQL's statement timeout and the deadline after which a silent
    connection is cut (``cloud.store.postgres``); SQLite waits on its own locks instead.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from cloud.store.postgres import DEFAULT_TIMEOUT_S, PostgresStore

        return PostgresStore(url, timeout_s=timeout_s or DEFAULT_TIMEOUT_S)
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        if not path.startswith("/") or len(path) < 2:
            raise StoreError(f"SQLite URL {url!r} has no path: write sqlite:///relative.db or sqlite:////abs.db")
        path = path[1:]
    elif "://" in url:
        raise StoreError(f"store URL {url!r} has an unknown scheme: use sqlite:///PATH or postgresql://...")
    else:
        path = url
    from cloud.store.sqlite import SqliteStore

    return SqliteStore(url, path)
