"""`harken collector`: run the fleet collector; inspect what it rejected; list its settings."""
from __future__ import annotations

import json
import logging
import signal
import threading
import time

import click

from cloud.config import ENV_PREFIX, CollectorConfig
from shared.cli_config import config_options, overrides_from_flags, reference
from shared.config import redacted

log = logging.getLogger(__name__)


@click.group("collector")
def group() -> None:
    """Run the fleet collector (ingest, store, drift, rollouts, API)."""


@group.command("run")
@click.option("--broker", "--broker-url", "broker_url", help="mqtt://host:port or mqtts://host:port of the broker.")
@click.option("--db", "--db-url", "db_url", help="Store URL: sqlite:///PATH or postgresql://... (default $HARKEN_DB).")
@click.option("--group", "group_name", help="Shared-subscription group of the collector replicas.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML configuration file.")
@config_options(CollectorConfig, ENV_PREFIX, skip=("broker_url", "db_url", "group"))
def run(broker_url, db_url, group_name, config_file, **flags) -> None:
    """Ingest windows, evaluate drift, step rollouts and serve the API until SIGTERM or SIGINT."""
    from cloud.collector import Collector
    from cloud.config import load_collector_config

    overrides = {"broker_url": broker_url, "db_url": db_url, "group": group_name, **overrides_from_flags(flags)}
    cfg = load_collector_config(config_file, overrides=overrides)
    log.debug("configuration: %s", redacted(cfg))
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    collector = Collector(cfg)
    where = f", dashboard http://{cfg.http_host}:{cfg.http_port}/" if cfg.http_port else ""
    click.echo(f"collector running: broker {cfg.broker_url}, group {cfg.group}, store {collector.store.dialect}"
               f"{where}", err=True)
    collector.run(stop)


@group.command("rejected")
@click.option("--db", "db_url", help="Store URL (default $HARKEN_DB, then sqlite:///./harken.db).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(0, 100000),
              help="How many of the latest rejected messages to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rejected(db_url, limit, as_json) -> None:
    """Show rejected-message counts per code and the latest rejected messages."""
    from cloud.config import resolve_db_url
    from cloud.store import open_store

    with open_store(resolve_db_url(db_url)) as store:
        counts, latest = store.reject_counts(), store.rejected(limit=limit)
    if as_json:
        click.echo(json.dumps({"counts": counts, "latest": latest}, indent=2))
        return
    for code, n in counts.items():
        click.echo(f"{code:20} {n}")
    for r in latest:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["t"]))
        click.echo(f"{when}  {r['code']:16} {r['topic']}  {r['detail'][:80]}")


@group.command("settings")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def settings(as_json) -> None:
    """List every collector setting with its flag, environment variable, default and bounds."""
    click.echo(reference(CollectorConfig, ENV_PREFIX, ("http", "alert", "drift", "rollout"), as_json=as_json))
