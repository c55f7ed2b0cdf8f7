"""The collector process, wired in one place: store, ingest, drift, rollouts, HTTP API.

    MQTT ─► Ingest (writer thread ─► writer process: validate, commit; then acknowledge) ─► Store
            └─► field samples: chunks staged in the store ─► Assembler ─► samples_dir (by sha256)
            maintenance thread ─► rollups (in the rollup process), pruning, drift job
                                  ─► alerts ─► MQTT alert/{id}, webhook
            rollout thread ─► Controller.tick (database lease: one controller acts at a time)
                              ─► Delivery: model/{sha}, dev/{id}/desired (retained)
            HTTP thread ─► uvicorn: /api, /metrics, the dashboard

With ``writer_process`` (the default) the ingest writer's work and the rollup passes run in two
child processes (``cloud.child``), so paho's network thread, which parses every packet in
Python, has this process's interpreter lock nearly to itself. Each thread and child has its own
store connection, so a long maintenance transaction or a slow API
query never holds the ingest writer's lock. Bundles, desired states and alerts go out over
the ingest connection (``Ingest.publisher``): one session and one broker identity per
replica, so no second connection of the same user can take the session over. The
maintenance thread also clears retained stats/events from the broker every
``retained_sweep_s`` (``cloud.retained``).
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Callable

from cloud.config import CollectorConfig
from cloud.ingest import CommitHook, Ingest, IngestHandler
from cloud.ingest_writer import in_memory
from cloud.notify import AlertNotifier
from cloud.rollup_process import RollupProcess
from cloud.samples.assemble import Assembler
from cloud.samples.files import SampleFiles
from cloud.store import RollupResult, Store, open_store, safe_url
from shared import keys
from shared.errors import HarkenError
from shared.topics import Topics

log = logging.getLogger(__name__)

Job = Callable[[Store, float], None]


def freeze_startup_heap() -> None:
    """Leave what start-up built (modules, the HTTP app, the registry) out of every later garbage
    collection. The writer holds a batch of decoded windows while it commits, so the interpreter
    runs full collections every batch or two, and each scanned the whole heap: a third of the
    writer's time in ``scripts/bench_collector.py``. Once per process (``Collector.run``): objects
    alive now are never collected afterwards."""
    gc.collect()
    gc.freeze()


class Collector:
    """One collector: ``start()``, then ``stop()`` (or ``run(stop_event)`` for both)."""

    def __init__(self, config: CollectorConfig, *, on_commit: CommitHook | None = None,
                 jobs: list[Job] | None = None):
        self.config = config
        self.topics = Topics(config.topic_prefix)
        self.public_keys = [keys.load_public_key(p) for p in config.public_keys]
        self.store = self._open_store()
        self.maintenance_store = self._open_store()
        self.handler = IngestHandler(self.topics, reject_log_interval_s=config.reject_log_interval_s,
                                     sample_max_clip_bytes=config.samples_max_clip_bytes,
                                     sample_quota_bytes=config.samples_max_bytes_per_device_hour)
        self.sample_files = SampleFiles(config.samples_dir)
        self.assembler = Assembler(self.store, self.sample_files, config.sample_retention())
        self.sample_sweeper = Assembler(self.maintenance_store, self.sample_files, config.sample_retention())
        self.ingest = Ingest(config, self.store, self.handler, on_commit=on_commit,
                             on_samples_ready=self.assembler.assemble)
        self.notifier = AlertNotifier(self.topics, self._publish_alert, config.alert_webhook_url,
                                      config.alert_webhook_timeout_s)
        self.drift_job = self._drift_job() if config.drift_enabled else None
        self.jobs: list[Job] = ([self._run_drift] if self.drift_job else []) + list(jobs or [])
        self.rollups = None if not config.writer_process or in_memory(config.db_url) else RollupProcess(
            config.db_url, config.db_timeout_s)
        self.rollup = self.maintenance_store.rollup if self.rollups is None else self.rollups.rollup
        self.last_rollup: RollupResult | None = None
        self.controller = None
        self.http_server = None
        self._last_sweep = time.monotonic()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._maintenance_loop, name="harken-maintenance", daemon=True)]
        if config.rollouts_enabled:
            self._threads.append(threading.Thread(target=self._rollout_loop, name="harken-rollouts", daemon=True))

    def _open_store(self) -> Store:
        return open_store(self.config.db_url, timeout_s=self.config.db_timeout_s)

    def _drift_job(self):
        from cloud.drift.engine import DriftConfig
        from cloud.drift.job import DriftJob

        cfg = self.config
        drift_config = DriftConfig(step_s=cfg.drift_step_s, long_steps=cfg.drift_long_steps,
                                   concept_step_s=cfg.drift_concept_step_s, warmup_s=cfg.drift_warmup_s,
                                   alerts_per_1000_device_days=cfg.drift_alerts_per_1000_device_days,
                                   settle_s=cfg.drift_settle_s)
        return DriftJob(registry_dir=cfg.registry_dir, config=drift_config, every_s=cfg.drift_every_s or None,
                        bucket_s=cfg.rollup_bucket_s)

    def start(self) -> None:
        log.info("collector starting: store %s (%s), broker %s, group %s", self.store.dialect,
                 safe_url(self.config.db_url), self.config.broker_url, self.config.group)
        self.ingest.start()
        for thread in self._threads:
            thread.start()
        if self.config.http_port:
            self._start_http()

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set (the CLI sets it on SIGTERM / SIGINT); the process is the collector's."""
        self.start()
        freeze_startup_heap()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self.http_server is not None:
            self.http_server.should_exit = True
        self.ingest.stop()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(30)
        if self.rollups is not None:
            self.rollups.close()
        self.notifier.close()
        self.store.close()
        self.maintenance_store.close()
        log.info("collector stopped: %d messages, %d new windows, %d rejected", self.ingest.stats.messages,
                 self.ingest.stats.windows_new, self.ingest.stats.rejects)

    # -- MQTT publishing (bundles, desired states, alerts) ---------------------------------
    def publisher(self):
        """The QoS-1 publisher over the ingest connection (DeliveryError while it is down)."""
        return self.ingest.publisher()

    def readiness(self) -> list[str]:
        """Why this collector does not get messages into the store now (empty: it does)."""
        return self.ingest.readiness()

    def _publish_alert(self, topic: str, payload: bytes) -> None:
        self.publisher().publish_all([(topic, payload, False)])

    def _run_drift(self, store: Store, now: float) -> None:
        self.notifier.notify(self.drift_job(store, now))

    # -- rollouts ------------------------------------------------------------------------------
    def _rollout_loop(self) -> None:
        from cloud.delivery import Delivery
        from cloud.registry import Registry
        from cloud.rollout.controller import Controller
        from cloud.rollout.repo import SqlDesiredRevs

        store = self._open_store()
        try:
            while not self._stop.wait(self.config.rollout_tick_s):
                try:
                    if self.controller is None:
                        delivery = Delivery(self.publisher(), SqlDesiredRevs(store), self.topics)
                        self.controller = Controller(store, delivery, Registry(store, self.config.registry_dir,
                                                                               self.public_keys),
                                                     lease_ttl_s=self.config.lease_ttl_s)
                    self.controller.tick()
                except HarkenError as exc:
                    log.warning("rollout controller: %s; retrying", exc)
                except Exception:  # keep ingesting whatever the controller does
                    log.exception("rollout controller crashed; retrying")
        finally:
            store.close()

    # -- HTTP API and dashboard -------------------------------------------------------------------
    def _start_http(self) -> None:
        import uvicorn

        from cloud.api.app import create_app

        app = create_app(self.api_services(self._open_store()))
        server = uvicorn.Server(uvicorn.Config(app, host=self.config.http_host, port=self.config.http_port,
                                               log_level="warning", access_log=False))
        server.install_signal_handlers = lambda: None  # the CLI owns the signals
        self.http_server = server
        thread = threading.Thread(target=server.run, name="harken-http", daemon=True)
        thread.start()
        self._threads.append(thread)
        log.info("HTTP API and dashboard on http://%s:%d/", self.config.http_host, self.config.http_port)

    def api_services(self, store: Store):
        """What the HTTP API reads: its own store connection and the collector's parts."""
        from cloud.api.backend import Services
        from cloud.drift.engine import DriftEngine
        from cloud.drift.source import StoreSource, registry_profiles
        from cloud.registry import Registry
        from cloud.rollout.service import RolloutService

        registry = Registry(store, self.config.registry_dir, self.public_keys)
        drift = None
        if self.drift_job is not None:
            drift = DriftEngine(StoreSource(store, registry_profiles(registry), self.config.rollup_bucket_s),
                                self.drift_job.config)
        return Services.from_config(self.config, store, registry=registry, drift=drift,
                                    rollouts=RolloutService(store, registry), ingest=self.ingest,
                                    samples=self.sample_files,
                                    readiness=self.readiness, public_metrics=self.config.http_public_metrics,
                                    drift_findings=(lambda: self.drift_job.last_findings) if self.drift_job else None)

    # -- periodic work ---------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """One round of maintenance: rollups, retention, pruning, then the jobs."""
        now = time.time() if now is None else now
        cfg = self.config
        self.last_rollup = self.rollup(cfg.rollup_bucket_s, cfg.retention_full_s, now=now)
        if self.last_rollup.unmergeable:
            log.warning("%d stored windows disagree with their model's histograms and were left out of rollups",
                        self.last_rollup.unmergeable)
        self.maintenance_store.prune_rejected(cfg.rejected_keep)
        self.sample_sweeper.sweep(now)
        self._publish_sample_commands()
        for job in self.jobs:
            job(self.maintenance_store, now)
        every = cfg.retained_sweep_s
        if every and time.monotonic() - self._last_sweep >= every and self.ingest.connected.is_set():
            self._last_sweep = time.monotonic()
            self.ingest.sweep.start()

    def _publish_sample_commands(self) -> None:
        """Queued sample switches and requests go out as desired states (while the broker is there)."""
        from cloud.delivery import Delivery
        from cloud.rollout.repo import SqlDesiredRevs
        from cloud.samples import control

        if not control.pending(self.maintenance_store):
            return
        if not self.ingest.connected.is_set():
            return  # the next tick tries again
        delivery = Delivery(self.publisher(), SqlDesiredRevs(self.maintenance_store), self.topics)
        control.publish_pending(self.maintenance_store, delivery)

    def _maintenance_loop(self) -> None:
        while not self._stop.wait(self.config.rollup_interval_s):
            try:
                self.tick()
            except HarkenError as exc:
                log.error("maintenance failed: %s; retrying in %.0f s", exc, self.config.rollup_interval_s)
            except Exception:  # keep ingesting whatever a job does
                log.exception("maintenance job crashed")

