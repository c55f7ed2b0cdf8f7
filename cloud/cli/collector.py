"""`harken collector`: run the fleet collector; inspect what it rejected; list its settings."""
from __future__ import annotations

import logging
import signal
import threading
import time

import click

from cloud.config import ENV_PREFIX, CollectorConfig
from shared.cli_config import config_options, overrides_from_flags, reference
from shared.cli_output import json_option, print_json, print_table
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
@json_option()
def rejected(db_url, limit, as_json) -> None:
    """Show rejected-message counts per code and the latest rejected messages."""
    from cloud.config import resolve_db_url
    from cloud.store import open_store

    with open_store(resolve_db_url(db_url)) as store:
        counts, latest = store.reject_counts(), store.rejected(limit=limit)
    if as_json:
        print_json({"counts": counts, "latest": latest})
        return
    print_table([{"code": code, "n": n} for code, n in counts.items()], [("code", "CODE"), ("n", "REJECTED")],
                right=("n",), empty="no rejected messages")
    if latest:
        click.echo()
        print_table([{**r, "when": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["t"])),
                      "detail": r["detail"][:80]} for r in latest],
                    [("when", "RECEIVED"), ("code", "CODE"), ("topic", "TOPIC"), ("detail", "DETAIL")])


@group.command("settings")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def settings(as_json) -> None:
    """List every collector setting with its flag, environment variable, default and bounds."""
    click.echo(reference(CollectorConfig, ENV_PREFIX, ("http", "alert", "drift", "rollout"), as_json=as_json))
