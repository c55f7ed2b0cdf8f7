"""The collector process, wired in one place: store, ingest, and the periodic jobs.

    MQTT ─► Ingest (writer thread: validate, commit, acknowledge) ─► Store
                                                        maintenance thread ─► rollups, pruning

The maintenance thread wakes every ``rollup_interval_s`` and runs ``tick``: merge new
windows into rollups, delete full windows past the retention, prune the rejected table.
Periodic jobs that read the store (drift) go in ``tick`` too. Each thread has its own store
connection, so a long maintenance transaction never holds the writer's lock.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from cloud.config import CollectorConfig
from cloud.ingest import CommitHook, Ingest, IngestHandler
from cloud.store import RollupResult, Store, open_store, safe_url
from shared.errors import HarkenError
from shared.topics import Topics

log = logging.getLogger(__name__)

Job = Callable[[Store, float], None]


class Collector:
    """One collector: ``start()``, then ``stop()`` (or ``run(stop_event)`` for both)."""

    def __init__(self, config: CollectorConfig, *, on_commit: CommitHook | None = None,
                 jobs: list[Job] | None = None):
        self.config = config
        self.store = open_store(config.db_url)
        self.maintenance_store = open_store(config.db_url)
        self.handler = IngestHandler(Topics(config.topic_prefix), retention_full_s=config.retention_full_s,
                                     reject_log_interval_s=config.reject_log_interval_s)
        self.ingest = Ingest(config, self.store, self.handler, on_commit=on_commit)
        self.jobs: list[Job] = list(jobs or [])
        self.last_rollup: RollupResult | None = None
        self._stop = threading.Event()
        self._maintenance = threading.Thread(target=self._maintenance_loop, name="harken-maintenance",
                                             daemon=True)

    def start(self) -> None:
        log.info("collector starting: store %s (%s), broker %s, group %s", self.store.dialect,
                 safe_url(self.config.db_url), self.config.broker_url, self.config.group)
        self.ingest.start()
        self._maintenance.start()

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set (the CLI sets it on SIGTERM / SIGINT)."""
        self.start()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        self.ingest.stop()
        if self._maintenance.ident is not None:
            self._maintenance.join(30)
        self.store.close()
        self.maintenance_store.close()
        log.info("collector stopped: %d messages, %d new windows, %d rejected", self.ingest.stats.messages,
                 self.ingest.stats.windows_new, self.ingest.stats.rejects)

    # -- periodic work ---------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """One round of maintenance: rollups, retention, pruning, then the jobs."""
        now = time.time() if now is None else now
        cfg = self.config
        self.last_rollup = self.maintenance_store.rollup(cfg.rollup_bucket_s, cfg.retention_full_s, now=now)
        if self.last_rollup.unmergeable:
            log.warning("%d stored windows disagree with their model's histograms and were left out of rollups",
                        self.last_rollup.unmergeable)
        self.maintenance_store.prune_rejected(cfg.rejected_keep)
        for job in self.jobs:
            job(self.maintenance_store, now)

    def _maintenance_loop(self) -> None:
        while not self._stop.wait(self.config.rollup_interval_s):
            try:
                self.tick()
            except HarkenError as exc:
                log.error("maintenance failed: %s; retrying in %.0f s", exc, self.config.rollup_interval_s)
            except Exception:  # keep ingesting whatever a job does
                log.exception("maintenance job crashed")

