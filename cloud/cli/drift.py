"""`harken drift`: drift alerts (status, show, ack) and the drift score table (report).

The store is ``--db`` (else $HARKEN_DB, else sqlite:///./harken.db); ``report`` also reads the
reference profiles of the registered models from ``--registry`` (else $HARKEN_REGISTRY, else
./registry). ``open_store_and_source`` is the only code that opens them; tests hand their own
through ``ctx.obj["drift_open"]``.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from datetime import datetime

import click

from shared.cli_output import json_option, print_json, print_table

DB_HELP = "Store URL (default $HARKEN_DB, then sqlite:///./harken.db)."
REGISTRY_HELP = "Directory of registered bundles (default $HARKEN_REGISTRY, then ./registry)."
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def open_store_and_source(db_url: str | None, registry_dir: str | None, with_source: bool):
    """(store, WindowSource or None): the store by URL and the registry's profiles."""
    from cloud.config import resolve_db_url
    from cloud.drift.source import StoreSource, registry_profiles
    from cloud.store import open_store

    store = open_store(resolve_db_url(db_url))
    if not with_source:
        return store, None
    from cloud.registry import Registry

    registry = Registry(store, registry_dir or os.environ.get("HARKEN_REGISTRY") or "registry")
    return store, StoreSource(store, registry_profiles(registry))


def _open(db_url, registry_dir=None, with_source=False):
    obj = click.get_current_context().obj
    opener = obj.get("drift_open") if isinstance(obj, dict) else None
    return (opener or open_store_and_source)(db_url, registry_dir, with_source)


# -- pure helpers (tested directly) ------------------------------------------------------------
def parse_duration(text: str) -> float:
    """Seconds from "90", "90s", "5m", "2h", "1d"."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration: write 300, 90s, 5m, 2h or 1d")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse_time(text: str, now: float) -> float:
    """Epoch seconds from a duration ago ("2h"), epoch seconds ("1767225600") or ISO 8601."""
    text = text.strip()
    if _DURATION.match(text) and text[-1] in _UNITS:
        return now - parse_duration(text)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: write 2h (ago), epoch seconds or 2026-01-31T08:00") from None
    return dt.timestamp() if dt.tzinfo else time.mktime(dt.timetuple()) + dt.microsecond / 1e6


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def alert_summary(alert) -> dict:
    """The listing fields of a ``cloud.drift.alerts.Alert``."""
    ev = alert.evidence
    top = (ev.get("top") or [{}])[0]
    drivers = [d["device"] for d in ev.get("devices", []) if d.get("driving")]
    tags = [t["tag"] for t in ev.get("tags", []) if t.get("driving")]
    return {"id": alert.id, "status": alert.status, "cohort": alert.cohort, "kind": alert.kind,
            "severity": round(alert.severity, 3), "peak_severity": round(alert.peak_severity, 3),
            "pattern": alert.pattern, "opened_t": alert.opened_t, "onset_t": alert.onset_t,
            "updated_t": alert.updated_t, "top_signal": top.get("signal"), "top_effect": top.get("effect"),
            "driving_devices": drivers, "driving_tags": tags}


def _num(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def format_alert(alert) -> str:
    """A person-readable page about one alert and its evidence."""
    s, ev = alert_summary(alert), alert.evidence
    lines = [f"alert {s['id']}: {s['kind']} drift on {s['cohort']} ({s['status']})",
             f"  severity {s['severity']} (peak {s['peak_severity']}; effect over its floor, ≥ 1 matters), "
             f"pattern {s['pattern'] or '-'}, horizon {ev.get('horizon') or '-'}, n {ev.get('n', 0)}",
             f"  opened {_when(alert.opened_t)}, onset {_when(alert.onset_t)}, updated {_when(alert.updated_t)}"
             + (f", acknowledged {_when(alert.acked_t)} by {alert.acked_by or '-'}" if alert.acked_t else "")
             + (f", resolved {_when(alert.resolved_t)}" if alert.resolved_t else "")]
    if ev.get("rule"):
        lines.append(f"  raised by rule {ev['rule']}; excluded devices with own alerts: "
                     f"{', '.join(ev.get('excluded') or []) or 'none'}")
    tests = ev.get("tests") or {}
    if tests:
        lines.append("  held to: " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(tests.items())
                                                if isinstance(v, (int, float))))
    lines.append("  top signals (mean now vs expected, against what):")
    for t in ev.get("top", []):
        lines.append(f"    {t.get('signal')}: {_num(t.get('mean'))} vs {_num(t.get('expected'))} "
                     f"({t.get('against') or '-'}), effect {_num(t.get('effect'))} (floor {_num(t.get('floor'))}, "
                     f"severity {_num(t.get('severity'))}), z {_num(t.get('z'))}, n {t.get('n')}")
    if ev.get("devices"):
        lines.append("  devices (contribution, own effect):")
        for d in ev["devices"]:
            lines.append(f"    {d['device']}{' *' if d.get('driving') else ''}: {d['contribution']:.0%}, "
                         f"{d['effect']:.4g}{' (own alert)' if d.get('alarm') else ''}")
    if ev.get("tags"):
        lines.append("  tags (contribution, lift):")
        for t in ev["tags"]:
            lines.append(f"    {t['tag']}{' *' if t.get('driving') else ''}: {t['contribution']:.0%}, {t['lift']:.2f}")
    return "\n".join(lines)


REPORT_COLUMNS = [("t_start_text", "STEP")] + [
    col for kind in ("input", "output", "concept")
    for col in ((f"{kind}_n", f"{kind[:3].upper()} N"), (f"{kind}_severity", f"{kind[:3].upper()} SEV"),
                (f"{kind}_top", f"{kind[:3].upper()} TOP"), (f"{kind}_cusum", f"{kind[:3].upper()} CUSUM"),
                (f"{kind}_flag", f"{kind[:3].upper()} FLAG"))]


# -- commands -------------------------------------------------------------------------------------
@click.group("drift")
def group() -> None:
    """Show drift alerts and drift reports."""


@group.command("status")
@click.option("--db", "db_url", help=DB_HELP)
@click.option("--all", "show_all", is_flag=True, help="Include resolved alerts.")
@json_option()
def status(db_url, show_all, as_json) -> None:
    """List open and acknowledged drift alerts (newest first)."""
    from cloud.drift.alerts import Alert

    store, _ = _open(db_url)
    with store:
        alerts = [Alert.from_row(r) for r in store.alerts()]
    alerts = [a for a in alerts if show_all or a.status != "resolved"]
    rows = [alert_summary(a) for a in alerts]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        r["opened"] = _when(r["opened_t"])
        r["drivers"] = ",".join(r["driving_devices"][:3] + r["driving_tags"][:2])
    print_table(rows, [("id", "ID"), ("status", "STATUS"), ("cohort", "COHORT"), ("kind", "KIND"),
                       ("severity", "SEVERITY"), ("pattern", "PATTERN"), ("opened", "OPENED"),
                       ("top_signal", "TOP SIGNAL"), ("drivers", "DRIVERS")],
                empty="no open drift alerts" if not show_all else "no drift alerts")


def _get_alert(store, alert_id: str):
    from cloud.drift.alerts import Alert

    row = store.alert(alert_id)
    if row is None:
        raise click.ClickException(f"no alert {alert_id!r}: list them with `harken drift status --all`")
    return Alert.from_row(row)


@group.command("show")
@click.argument("alert_id", metavar="ALERT")
@click.option("--db", "db_url", help=DB_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(alert_id, db_url, as_json) -> None:
    """Show one alert and its evidence."""
    store, _ = _open(db_url)
    with store:
        alert = _get_alert(store, alert_id)
    click.echo(json.dumps(alert.to_dict(), indent=2) if as_json else format_alert(alert))


@group.command("ack")
@click.argument("alert_id", metavar="ALERT")
@click.option("--db", "db_url", help=DB_HELP)
@click.option("--by", default=lambda: os.environ.get("USER", "cli"), show_default="$USER",
              help="Who acknowledges.")
def ack(alert_id, db_url, by) -> None:
    """Acknowledge an alert (it resolves when the drift does)."""
    from cloud.drift.alerts import acknowledge

    store, _ = _open(db_url)
    with store:
        alert = _get_alert(store, alert_id)
        try:
            acked = acknowledge(alert, time.time(), by)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        store.save_alert(acked.to_row())
    click.echo(f"acknowledged {acked.id} ({acked.kind} drift on {acked.cohort})")


@group.command("report")
@click.option("--cohort", required=True, help="fleet, tag:TAG, device:ID or model:SHA (a prefix is enough).")
@click.option("--since", "since", required=True, help="Start: 2h (ago), epoch seconds or ISO 8601.")
@click.option("--until", "until", default=None, help="End (default now), same forms as --since.")
@click.option("--step", "step", default=None, help="Row length: 300, 5m, 1h (default: span / 48, at least 60 s).")
@click.option("--db", "db_url", help=DB_HELP)
@click.option("--registry", "registry_dir", help=REGISTRY_HELP)
@json_option()
def report(cohort, since, until, step, db_url, registry_dir, as_json) -> None:
    """Print a cohort's drift scores over time."""
    from cloud.drift.engine import DriftEngine
    from cloud.drift.report import drift_report
    from cloud.drift.tables import Cohort

    now = time.time()
    try:
        Cohort.parse(cohort)
        since_t = parse_time(since, now)
        until_t = parse_time(until, now) if until else now
        step_s = parse_duration(step) if step else max(60.0, math.ceil((until_t - since_t) / 48))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if until_t <= since_t or step_s <= 0:
        raise click.BadParameter("--until must be after --since and --step positive")
    store, source = _open(db_url, registry_dir, with_source=True)
    with store:
        try:
            rows = drift_report(DriftEngine(source), cohort, since_t, until_t, step_s)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    if as_json:
        print_json({"cohort": cohort, "since_t": since_t, "until_t": until_t, "step_s": step_s, "rows": rows})
        return
    for r in rows:
        r["t_start_text"] = _when(r["t_start"])
    click.echo(f"{cohort}: drift per {step_s:g} s step (severity: effect over its floor; cusum: the change "
               f"statistic, 'drift' over its threshold)")
    print_table(rows, REPORT_COLUMNS)
