"""Rollup passes in a child process (``cloud.child``), off the MQTT client's core and lock.

A pass merges every window stored since the last one into its buckets: about a hundred µs of
Python per window, more than paho's own work on it, so run in the collector's process it
halved the rate paho drains the broker at while the pass lasted. ``RollupProcess.rollup`` is
``Store.rollup`` done by a child with its own store connection; the maintenance thread waits
for it as it waited for the call. Each chunk of a pass is one transaction, so a child that dies
mid-pass leaves its claimed windows either rolled up or not at all; the pass fails with a
``StoreError`` and the next maintenance tick starts a new child.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from cloud.child import LOG_FORMAT, Child, ChildDied, Pipe, log_settings
from cloud.store import RollupResult, open_store
from shared.errors import StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RollupSpec:
    db_url: str
    db_timeout_s: float | None
    log: tuple[int, str] = (logging.WARNING, LOG_FORMAT)

    def serve(self, pipe: Pipe) -> None:
        store = open_store(self.db_url, timeout_s=self.db_timeout_s)
        pipe.settle()
        try:
            while True:
                message = pipe.receive()
                if message[0] == "exit":
                    return
                _, bucket_s, retention_full_s, now = message
                try:
                    pipe.send(("done", store.rollup(bucket_s, retention_full_s, now=now)))
                except StoreError as exc:
                    pipe.send(("error", str(exc)))
                except Exception as exc:  # a bug: say so in the parent, keep serving
                    log.exception("rollup pass crashed")
                    pipe.send(("error", f"the rollup pass crashed ({exc.__class__.__name__}: {exc}); this is a "
                                        "Harken bug: report it with the log"))
                pipe.collect()
        finally:
            store.close()


class RollupProcess:
    """``rollup(bucket_s, retention_full_s, now=...)`` as ``Store.rollup``, done by a child started
    at the first pass."""

    def __init__(self, db_url: str, db_timeout_s: float | None):
        self.spec = RollupSpec(db_url, db_timeout_s, log_settings())
        self.child = Child("rollup")
        self._lock = threading.Lock()  # one pass at a time through the pipe

    @property
    def pid(self) -> int | None:
        return self.child.pid

    def rollup(self, bucket_s: int, retention_full_s: float, *, now: float) -> RollupResult:
        with self._lock:
            return self._rollup(bucket_s, retention_full_s, now)

    def _rollup(self, bucket_s: int, retention_full_s: float, now: float) -> RollupResult:
        try:
            if not self.child.running:
                self.child.start(self.spec)
            self.child.send(("rollup", bucket_s, retention_full_s, now))
            kind, value = self.child.receive()
        except ChildDied as exc:
            self.child.reap()
            raise StoreError(f"the rollup process died ({exc}); the next pass starts it again") from None
        if kind == "error":
            raise StoreError(value)
        return value

    def close(self) -> None:
        with self._lock:
            self.child.close()
