"""`harken fleet`: the devices of the fleet, their state, and their tags."""
from __future__ import annotations

import json
import time

import click

from shared.cli_output import json_option, print_json, print_table
from shared.topics import check_device_id

_DB_HELP = "Store URL (default $HARKEN_DB, then the config file's db_url, then sqlite:///./harken.db)."


def _open(db_url: str | None, config_file: str | None):
    from cloud.config import load_collector_config, resolve_db_url
    from cloud.store import open_store

    cfg = load_collector_config(config_file) if config_file else None
    return open_store(resolve_db_url(db_url, cfg.db_url if cfg else "")), cfg


def _offline_after_s(cfg) -> float:
    return cfg.offline_after_s if cfg else 120.0


def _device_arg(ctx, param, value: str) -> str:
    try:
        return check_device_id(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h" if seconds < 172800 else f"{seconds / 86400:.0f}d"


def _short(sha: str | None) -> str:
    return (sha or "-")[:12]


@click.group("fleet")
def group() -> None:
    """Show and tag the devices of the fleet."""


@group.command("status")
@click.option("--db", "db_url", help=_DB_HELP)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Collector TOML configuration.")
@json_option()
def status(db_url, config_file, as_json) -> None:
    """List every device: online or not, last seen, clock offset, agent, models, automation, health, tags."""
    from cloud.fleet import counts, fleet_status, format_offset

    store, cfg = _open(db_url, config_file)
    with store:
        views = fleet_status(store, now=time.time(), offline_after_s=_offline_after_s(cfg))
    if as_json:
        print_json({"counts": counts(views), "devices": [v.as_dict() for v in views]})
        return
    c = counts(views)
    click.echo(f"{c['devices']} devices: {c['online']} online, {c['offline']} offline, {c['stale']} stale")
    rows = [{"device": v.device, "status": v.status, "seen": _ago(v.last_seen_ago_s),
             "clock": format_offset(v.clock_offset_s), "agent": v.agent_version, "active": _short(v.active_model),
             "shadow": _short(v.shadow_model), "automation": v.automation, "health": v.health,
             "tags": ",".join(v.tags)} for v in views]
    if rows:
        print_table(rows, [("device", "DEVICE"), ("status", "STATUS"), ("seen", "SEEN"), ("clock", "CLOCK"),
                           ("agent", "AGENT"), ("active", "ACTIVE"), ("shadow", "SHADOW"),
                           ("automation", "AUTOMATION"), ("health", "HEALTH"), ("tags", "TAGS")],
                    right=("seen", "clock"))


@group.command("show")
@click.argument("device", callback=_device_arg)
@click.option("--db", "db_url", help=_DB_HELP)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Collector TOML configuration.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(device, db_url, config_file, as_json) -> None:
    """Show one device: reported state, clock offset, figures over the last hour, recent events."""
    from cloud.fleet import device_detail, format_offset
    from cloud.store.base import DEFAULT_BUCKET_S

    store, cfg = _open(db_url, config_file)
    with store:
        detail = device_detail(store, device, offline_after_s=_offline_after_s(cfg),
                               bucket_s=cfg.rollup_bucket_s if cfg else DEFAULT_BUCKET_S)
    if detail is None:
        raise click.ClickException(f"no device {device!r} in the store; `harken fleet status` lists them")
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    for key in ("device", "status", "agent_version", "boot", "active_model", "previous_model", "shadow_model",
                "automation", "health", "last_error"):
        click.echo(f"{key:15} {detail[key] if detail[key] is not None else '-'}")
    click.echo(f"{'last_seen':15} {_ago(detail['last_seen_ago_s'])} ago")
    click.echo(f"{'clock_offset':15} {format_offset(detail['clock_offset_s'])} (its clock minus the collector's)")
    click.echo(f"{'tags':15} {', '.join(detail['tags']) or '-'}")
    for model, s in detail["summary"].items():
        click.echo(f"model {_short(model)}: {s['n_windows']} windows, {s['inferences']} inferences, "
                   f"error rate {s['error_rate']}, no-answer rate {s['no_answer_rate']}")
    for e in detail["events"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["t"]))
        click.echo(f"{when}  {e['event']:18} {e['reason'] or ''}")


@group.command("tag")
@click.argument("device", callback=_device_arg)
@click.argument("tags", nargs=-1, required=True)
@click.option("--db", "db_url", help=_DB_HELP)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Collector TOML configuration.")
def tag(device, tags, db_url, config_file) -> None:
    """Add TAGS to DEVICE (a device may be tagged before it is first seen)."""
    _check_tags(tags)
    store, _ = _open(db_url, config_file)
    with store:
        store.tag(device, tags)
        now = store.tags(device)
    click.echo(f"{device}: {', '.join(now)}")


@group.command("untag")
@click.argument("device", callback=_device_arg)
@click.argument("tags", nargs=-1, required=True)
@click.option("--db", "db_url", help=_DB_HELP)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Collector TOML configuration.")
def untag(device, tags, db_url, config_file) -> None:
    """Remove TAGS from DEVICE."""
    _check_tags(tags)
    store, _ = _open(db_url, config_file)
    with store:
        store.untag(device, tags)
        left = store.tags(device)
    click.echo(f"{device}: {', '.join(left) or '(no tags)'}")


def _check_tags(tags) -> None:
    for t in tags:
        if not t or len(t) > 64 or any(c.isspace() or c in ",:" for c in t):
            raise click.BadParameter(f"tag {t!r}: use 1-64 characters without spaces, ',' or ':'")
