"""The collector's configuration: one typed, strict dataclass (file < environment < flags).

TOML sections map onto prefixed names: ``[http] port = 8080`` is ``http_port``, its
environment variable ``HARKEN_COLLECTOR_HTTP_PORT``. The store URL also comes from
``HARKEN_DB`` (shared with ``harken fleet``) when neither the file nor a flag sets it.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from cloud.store.base import DEADLINE_GRACE_S, DEFAULT_BUCKET_S
from shared.config import check_broker_url, check_tls_files, load_config, secret_file, setting
from shared.errors import ConfigError
from shared.mqtt import MAX_PACKET_BYTES, MqttSettings
from shared.topics import DEFAULT_PREFIX, Topics

ENV_PREFIX = "HARKEN_COLLECTOR_"
DB_ENV = "HARKEN_DB"
DEFAULT_DB_URL = "sqlite:///./harken.db"


def _default_client_id() -> str:
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())[:40]
    return f"harken-collector-{host or 'local'}"


@dataclass
class CollectorConfig:
    # -- broker -----------------------------------------------------------------------
    broker_url: str = setting("mqtt://127.0.0.1:1883", "mqtt://host:port or mqtts://host:port of the broker.")
    username: str = setting("", "MQTT user name of the collector.")
    password: str = setting("", "MQTT password; prefer password_file or the environment variable to a flag.",
                            secret=True)
    password_file: str = secret_file("password", "MQTT password")
    tls_ca: str = setting("", "CA certificate (PEM) that signed the broker's certificate (mqtts).")
    tls_cert: str = setting("", "Client certificate (PEM) for mutual TLS; needs tls_key.")
    tls_key: str = setting("", "Client private key (PEM) for mutual TLS; needs tls_cert.", secret=True)
    tls_insecure: bool = setting(False, "Skip the broker host name check (test rigs only).")
    topic_prefix: str = setting(DEFAULT_PREFIX, "Prefix of every Harken topic.")
    group: str = setting("harken", "Shared-subscription group: collector replicas in one group split the load.")
    client_id: str = setting("", "MQTT client id; keep it stable so the broker keeps the session (default: "
                                 "harken-collector-HOSTNAME). Replicas need different ids (and, on a broker "
                                 "that uses the user name as client id, different users).")
    keepalive_s: int = setting(30, "MQTT keep-alive interval.", ge=5, le=3600)
    session_expiry_s: int = setting(7 * 86400, "How long the broker queues windows for a stopped collector.",
                                    ge=0, le=4294967295)
    receive_maximum: int = setting(2000, "Unacknowledged messages the broker may have in flight to us.",
                                   ge=1, le=65535)
    retained_sweep_s: float = setting(600.0, "How often retained stats/event messages are cleared from the "
                                      "broker (also after every connect); 0: only after connecting.",
                                      ge=0.0, le=86400.0)
    # -- ingest -----------------------------------------------------------------------
    ingest_queue_max: int = setting(10000, "Messages waiting for the writer, at most. QoS 1 messages are bounded "
                                    "by receive_maximum; QoS 0 messages beyond ingest_queue_max - receive_maximum "
                                    "(or ingest_queue_bytes) are shed and counted.", ge=2, le=10_000_000)
    ingest_queue_bytes: int = setting(64 * 1024 * 1024, "Payload bytes waiting for the writer beyond which QoS 0 "
                                      "messages are shed.", ge=1024, le=1 << 40)
    batch_max: int = setting(500, "Messages committed (then acknowledged) together, at most.", ge=1, le=65535)
    batch_ms: float = setting(50.0, "Longest wait to fill a batch before committing it.", ge=0.0, le=10000.0)
    writer_process: bool = setting(True, "Decode, validate and commit in a child process, so the MQTT client's "
                                   "thread has a core of its own (SQLite in memory always uses a thread).")
    reject_log_interval_s: float = setting(60.0, "Rejected messages are logged once per code per interval.",
                                           ge=0.0, le=86400.0)
    rejected_keep: int = setting(100000, "Rejected messages kept for inspection (counts are kept forever).",
                                 ge=0, le=100_000_000)
    # -- store ------------------------------------------------------------------------
    db_url: str = setting("", "Store: sqlite:///PATH (default sqlite:///./harken.db, or $HARKEN_DB) or "
                              "postgresql://user@host/db.")
    db_timeout_s: float = setting(30.0, "PostgreSQL: longest statement (statement_timeout); a connection silent "
                                  "5 s past it is cut and reopened.", ge=1.0, le=3600.0)
    retention_full_s: float = setting(2 * 86400.0, "Full windows are kept this long after they were received, then "
                                      "only their rollups; a redelivered window whose boot's full windows were "
                                      "deleted up to its seq is rejected (too_late).",
                                      ge=60.0, le=10 * 365 * 86400.0)
    rollup_bucket_s: int = setting(DEFAULT_BUCKET_S, "Width of a rollup bucket (merged windows per device "
                                   "and model); keep it a divisor of the drift step.", ge=10, le=86400)
    rollup_interval_s: float = setting(5.0, "How often new windows are merged into rollups (the horizon "
                                       "queries merge the windows newer than that one by one).", ge=0.1, le=86400.0)
    offline_after_s: float = setting(120.0, "A device not heard from for this long shows as stale.",
                                      ge=1.0, le=30 * 86400.0)
    # -- field samples (cloud/samples) -------------------------------------------------
    samples_dir: str = setting("samples", "Directory of field samples: one WAV file per sample, named by the "
                                          "sha256 of its bytes ({dir}/{sha[:2]}/{sha}.wav).")
    samples_max_clip_bytes: int = setting(1024 * 1024, "Largest sample accepted; a larger header is rejected "
                                          "(sample_too_large).", ge=1024, le=16 * 1024 * 1024)
    samples_max_bytes_per_device_hour: int = setting(16 * 1024 * 1024, "Sample bytes one device may send in an "
                                                     "hour (by receive time); more is rejected (sample_quota).",
                                                     ge=1024, le=1 << 40)
    samples_retention_s: float = setting(30 * 86400.0, "Unlabelled samples are deleted this long after they "
                                         "arrived (0: kept for ever).", ge=0.0, le=10 * 365 * 86400.0)
    samples_labelled_retention_s: float = setting(0.0, "Labelled samples are deleted this long after they arrived "
                                                  "(0: kept for ever).", ge=0.0, le=10 * 365 * 86400.0)
    samples_incomplete_s: float = setting(86400.0, "A sample whose chunks stop arriving is dropped after this "
                                          "long (sample_incomplete).", ge=60.0, le=30 * 86400.0)
    # -- registry and rollouts ---------------------------------------------------------
    registry_dir: str = setting("registry", "Directory of registered bundles (by model sha256).")
    public_keys: list[str] = setting([], "Trusted signing.pub files: bundles signed by them can be registered.")
    rollout_tick_s: float = setting(1.0, "How often the rollout controller steps (one controller acts at a "
                                    "time: a database lease elects it).", ge=0.05, le=3600.0)
    rollouts_enabled: bool = setting(True, "Run the rollout controller in this collector.")
    rollout_lease_ttl_s: float = setting(0.0, "Lifetime of the rollout controller's lease on the database's "
                                         "clock: another replica takes over this long after the leader died. "
                                         "Renewed during long steps; at least twice the longest database call "
                                         "(db_timeout_s + 5 s). 0: that, but at least 90 s.", ge=0.0, le=3600.0)
    # -- drift ------------------------------------------------------------------------
    drift_enabled: bool = setting(True, "Evaluate drift and keep alerts in this collector.")
    drift_step_s: float = setting(300.0, "Drift step (input and output drift): a whole multiple of "
                                  "rollup_bucket_s; the detectors read merged steps.", ge=1.0, le=86400.0)
    drift_concept_step_s: float = setting(3600.0, "Drift step of concept drift (feedback is sparse and late); a "
                                          "whole multiple of rollup_bucket_s.", ge=1.0, le=7 * 86400.0)
    drift_long_steps: int = setting(36, "Steps each drift evaluation looks back over.", ge=4, le=10000)
    drift_warmup_s: float = setting(24 * 3600.0, "A device learns its own baseline over this long after it starts "
                                    "on a model; until then only the fleet and peer checks judge it.",
                                    ge=1.0, le=30 * 86400.0)
    drift_alerts_per_1000_device_days: float = setting(
        1.0, "False-alarm budget: drift alerts a healthy fleet may raise per 1,000 device-days; every drift "
             "threshold follows from it (docs/drift.md).", ge=1e-6, le=1e6)
    drift_settle_s: float = setting(30.0, "A drift step is read once it ended this long ago (late windows).",
                                    ge=0.0, le=3600.0)
    drift_every_s: float = setting(0.0, "How often drift is evaluated (0: once per drift step).", ge=0.0, le=86400.0)
    # -- http api ---------------------------------------------------------------------
    http_host: str = setting("127.0.0.1", "Address the operator HTTP API and dashboard listen on.")
    http_port: int = setting(8080, "Port of the operator HTTP API and dashboard (0 disables it).", ge=0, le=65535)
    http_token: str = setting("", "Bearer token the HTTP API requires (role operate, name 'operator'); prefer "
                                  "http_token_file or http_tokens_file.", secret=True)
    http_token_file: str = secret_file("http_token", "HTTP API bearer token")
    http_tokens_file: str = setting("", "File of named API tokens with roles, one per line: NAME ROLE TOKEN (ROLE "
                                        "read or operate; '#' starts a comment). The audit log names the token.")
    http_public_metrics: bool = setting(False, "Serve /metrics without the token (for a Prometheus on loopback).")
    # -- alerts -----------------------------------------------------------------------
    alert_webhook_url: str = setting("", "URL that drift alerts are POSTed to (empty: none).")
    alert_webhook_timeout_s: float = setting(5.0, "Timeout of one webhook POST.", ge=0.1, le=120.0)

    # -- named cross-field checks -------------------------------------------------------
    def check(self) -> None:
        for rule in (self._check_broker, self._check_tls, self._check_prefix, self._check_group,
                     self._check_db, self._check_rollup, self._check_lease, self._check_webhook,
                     self._check_queue, self._check_tokens):
            rule()

    def _check_broker(self) -> None:
        check_broker_url(self.broker_url)

    def _check_tls(self) -> None:
        check_tls_files(self.broker_url, self.tls_ca, self.tls_cert, self.tls_key)

    def _check_prefix(self) -> None:
        try:
            Topics(self.topic_prefix)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _check_group(self) -> None:
        if not self.group or any(c in self.group for c in "/+#"):
            raise ConfigError(f"group {self.group!r} must be non-empty without '/', '+' or '#'")

    def _check_db(self) -> None:
        if self.db_url and "://" in self.db_url and not self.db_url.startswith(
                ("sqlite:///", "postgresql://", "postgres://")):
            raise ConfigError(f"db_url {self.db_url!r}: use sqlite:///PATH or postgresql://user@host/db")

    def _check_rollup(self) -> None:
        if self.retention_full_s < self.rollup_bucket_s:
            raise ConfigError(f"retention_full_s ({self.retention_full_s}) is shorter than rollup_bucket_s "
                              f"({self.rollup_bucket_s}); keep full windows at least one bucket long")
        for name in ("drift_step_s", "drift_concept_step_s"):
            step = getattr(self, name)
            if step % self.rollup_bucket_s:
                raise ConfigError(f"{name} ({step:g}) is not a whole multiple of rollup_bucket_s "
                                  f"({self.rollup_bucket_s}): drift reads rollups, so its steps must be made of "
                                  f"whole buckets; set e.g. --rollup-bucket-s {int(min(step, self.rollup_bucket_s))}"
                                  f" or a drift step of {self.rollup_bucket_s * max(1, round(step / self.rollup_bucket_s))}")

    def _check_lease(self) -> None:
        if not self.rollouts_enabled or not self.rollout_lease_ttl_s:
            return
        statement_s = self.db_timeout_s + DEADLINE_GRACE_S
        if self.rollout_lease_ttl_s < 2 * statement_s:
            raise ConfigError(f"rollout_lease_ttl_s ({self.rollout_lease_ttl_s:g}) must be at least twice the longest "
                              f"database call ({statement_s:g} s: db_timeout_s + {DEADLINE_GRACE_S:g}), or a leader "
                              f"waiting on one statement loses its lease; set it to {2 * statement_s:g} or more")
        if self.rollout_lease_ttl_s < 3 * self.rollout_tick_s:
            raise ConfigError(f"rollout_lease_ttl_s ({self.rollout_lease_ttl_s:g}) must be at least three rollout "
                              f"ticks (rollout_tick_s {self.rollout_tick_s:g}): the lease is renewed once per tick")

    def _check_webhook(self) -> None:
        if self.alert_webhook_url and urlsplit(self.alert_webhook_url).scheme not in ("http", "https"):
            raise ConfigError(f"alert_webhook_url {self.alert_webhook_url!r} must be an http(s) URL")

    def _check_queue(self) -> None:
        if self.ingest_queue_max <= self.receive_maximum:
            raise ConfigError(f"ingest_queue_max ({self.ingest_queue_max}) must exceed receive_maximum "
                              f"({self.receive_maximum}): the broker may have that many QoS 1 messages in flight")

    def _check_tokens(self) -> None:
        if self.http_tokens_file:
            from cloud.api.tokens import read_tokens_file

            read_tokens_file(self.http_tokens_file)  # a bad line stops the collector before it starts

    # -- derived values ---------------------------------------------------------------
    def sample_retention(self):
        from cloud.samples.assemble import Retention

        return Retention(unlabelled_s=self.samples_retention_s or None,
                         labelled_s=self.samples_labelled_retention_s or None, incomplete_s=self.samples_incomplete_s)

    @property
    def lease_ttl_s(self) -> float:
        """The rollout lease's TTL: as set, or twice the longest database call and at least 90 s."""
        return self.rollout_lease_ttl_s or max(90.0, 2 * (self.db_timeout_s + DEADLINE_GRACE_S))

    @property
    def mqtt_client_id(self) -> str:
        return self.client_id or _default_client_id()

    def mqtt_settings(self) -> MqttSettings:
        """The collector's one connection: ingest and publishing (bundles, desired states, alerts, receipts)."""
        return MqttSettings.from_config(self, self.mqtt_client_id, session_expiry_s=self.session_expiry_s,
                                        receive_maximum=self.receive_maximum, max_packet_bytes=MAX_PACKET_BYTES,
                                        max_inflight=100)


def resolve_db_url(flag: str | None = None, file_value: str = "", env: Mapping[str, str] | None = None) -> str:
    """The store URL: flag > HARKEN_DB > config file > sqlite:///./harken.db."""
    env = os.environ if env is None else env
    return flag or env.get(DB_ENV) or file_value or DEFAULT_DB_URL


def load_collector_config(file: str | os.PathLike | None = None, *, env: Mapping[str, str] | None = None,
                          overrides: Mapping[str, Any] | None = None) -> CollectorConfig:
    """CollectorConfig from a TOML file < HARKEN_COLLECTOR_* and HARKEN_DB < overrides (flags)."""
    env = os.environ if env is None else env
    cfg = load_config(CollectorConfig, file=file, env=env, env_prefix=ENV_PREFIX, overrides=overrides)
    if not (overrides or {}).get("db_url") and not env.get(ENV_PREFIX + "DB_URL") and env.get(DB_ENV):
        cfg.db_url = env[DB_ENV]
    cfg.db_url = cfg.db_url or DEFAULT_DB_URL
    cfg.check()
    return cfg
