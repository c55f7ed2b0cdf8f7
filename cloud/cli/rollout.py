"""`harken rollout`: start and steer staged model rollouts.

``start`` and the operator commands only write the store; the rollout controller (in the
collector, or ``harken rollout run``) acts on them at its next tick.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import click

from cloud.cli.registry import KEY_HELP, open_registry, registry_options
from shared.cli_output import json_option, print_json, print_table

ACTIONS = {
    "pause": "Pause a rollout: no promotion, no retries, until resumed.",
    "resume": "Resume a paused rollout (the bake clock skips the pause).",
    "approve": "Approve the promotion a manual rollout is waiting for.",
    "abort": "Abort a rollout: every device goes back to what it ran before.",
    "rollback": "Roll a rollout back (also a completed one): every device returns to its previous model.",
}


@click.group("rollout")
def group() -> None:
    """Start and steer staged model rollouts."""


def _service(db_url, registry_dir, public_keys=()):
    from cloud.rollout.service import RolloutService

    store, reg = open_registry(db_url, registry_dir, public_keys)
    return store, RolloutService(store, reg)


def _ago(t: float | None, now: float) -> str:
    return "-" if t is None else f"{max(0.0, now - t):.0f} s ago"


def _counts(r) -> dict:
    stage = r.stage_devices() if r.status not in ("completed", "rolled_back", "aborted", "failed") else r.devices
    c = {"total": len(r.devices), "in_stage": len(stage), "converged": 0, "pending": 0, "failed": 0}
    for d in stage:
        c[r.tracks[d].status] += 1
    return c


@group.command("start")
@click.argument("version")
@click.option("--cohort", default="fleet", show_default=True, help="fleet, tag:NAME, device:ID or model:SHA.")
@click.option("--strategy", default="canary", show_default=True,
              help="shadow, canary, blue-green, a comma list of them, or a plan file (.toml/.json).")
@click.option("--steps", help="Canary steps in percent, e.g. 5,25,100.")
@click.option("--bake", help="Bake time of each stage, e.g. 10m (default 10m).")
@click.option("--gates", "gates_file", type=click.Path(exists=True, dir_okay=False), help="Gate thresholds (TOML).")
@click.option("--approval", type=click.Choice(["auto", "manual"]), default="auto", show_default=True,
              help="manual: wait for `harken rollout approve` before each promotion.")
@click.option("--deadline", help="Time a device has to report the desired model (default 2m).")
@click.option("--max-attempts", type=int, help="Desired-state sends per device before it counts as failed.")
@click.option("--max-failed-fraction", type=float, help="Share of failed devices that stops the rollout.")
@click.option("--stage-timeout", help="A stage whose gates cannot decide within this fails closed (default 4h).")
@registry_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def start(version, cohort, strategy, steps, bake, gates_file, approval, deadline, max_attempts,
          max_failed_fraction, stage_timeout, db_url, registry_dir, as_json) -> None:
    """Start rolling model VERSION out to a cohort (alias, name:version or sha prefix)."""
    from cloud.rollout.plan import parse_duration

    policy = {"deadline_s": parse_duration(deadline) if deadline else None, "max_attempts": max_attempts,
              "max_failed_fraction": max_failed_fraction,
              "stage_timeout_s": parse_duration(stage_timeout) if stage_timeout else None}
    store, svc = _service(db_url, registry_dir)
    with store:
        r = svc.start(version, cohort, strategy, steps=steps, bake=bake, approval=approval, gates=gates_file,
                      actor=os.environ.get("USER", ""), policy=policy)
    if as_json:
        click.echo(json.dumps(r.to_dict(), indent=2))
        return
    click.echo(f"{r.id}: {r.model_label} to {len(r.devices)} devices ({r.cohort}), "
               f"plan {' → '.join(s.label for s in r.plan)}; the controller starts it at its next tick")


@group.command("list")
@registry_options
@json_option()
def list_rollouts(db_url, registry_dir, as_json) -> None:
    """List rollouts, newest last: model, cohort, status, stage, reason."""
    store, svc = _service(db_url, registry_dir)
    with store:
        rollouts = svc.list()
    if as_json:
        print_json([{"id": r.id, "model": r.model, "model_label": r.model_label, "cohort": r.cohort,
                     "status": r.status, "stage": r.stage, "stages": len(r.plan), "reason": r.reason,
                     "created_t": r.created_t, "updated_t": r.updated_t, "devices": _counts(r)}
                    for r in rollouts])
        return
    rows = [{"id": r.id, "model": r.model_label, "cohort": r.cohort, "status": r.status,
             "stage": f"{r.stage + 1}/{len(r.plan)} {r.current_stage.label}", "reason": r.reason[:80]}
            for r in rollouts]
    print_table(rows, [("id", "ID"), ("model", "MODEL"), ("cohort", "COHORT"), ("status", "STATUS"),
                       ("stage", "STAGE"), ("reason", "REASON")],
                empty="no rollouts; `harken rollout start VERSION` begins one")


@group.command("status")
@click.argument("rollout_id")
@registry_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the rollout and its log).")
def status(rollout_id, db_url, registry_dir, as_json) -> None:
    """Show one rollout: stage, devices, the latest gate figures and every transition."""
    store, svc = _service(db_url, registry_dir)
    with store:
        r = svc.repo.get(rollout_id)
        log = svc.log(r.id)
    if as_json:
        click.echo(json.dumps({"rollout": r.to_dict(), "devices": _counts(r), "log": log}, indent=2))
        return
    now = time.time()
    click.echo(f"rollout {r.id}  {r.model_label} ({r.model[:12]})  cohort {r.cohort}  approval {r.approval}")
    click.echo(f"status  {r.status}{' (settling)' if not r.settled else ''}" + (f" — {r.reason}" if r.reason else ""))
    click.echo(f"stage   {r.stage + 1}/{len(r.plan)} {r.current_stage.label}, started "
               f"{_ago(r.stage_started_t, now)}, bake {r.current_stage.bake_s:.0f} s")
    c = _counts(r)
    click.echo(f"devices {c['total']} in cohort, {c['in_stage']} in this stage: {c['converged']} converged, "
               f"{c['pending']} pending, {c['failed']} failed")
    for v in r.verdicts:
        click.echo(f"stage {v['stage'] + 1} {v.get('label', '')}: {v.get('verdict')}")
        for g in v.get("gates") or []:
            click.echo(f"  {g['gate']:20} {g['verdict']:5} {g['reason']}")
    click.echo("log:")
    for e in log:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["t"]))
        click.echo(f"  {when} {e['event']:18} {e['to_status']:18} {e['reason']}")


def _action_command(action: str, help_text: str) -> click.Command:
    @click.command(action, help=help_text)
    @click.argument("rollout_id")
    @click.option("--reason", default="", help="Why (kept in the rollout log).")
    @registry_options
    def command(rollout_id, reason, db_url, registry_dir) -> None:
        store, svc = _service(db_url, registry_dir)
        with store:
            r = svc.act(rollout_id, action, actor=os.environ.get("USER", ""), reason=reason)
        click.echo(f"{action} queued for {r.id} ({r.status}); the controller applies it at its next tick")

    return command


for _name, _help in ACTIONS.items():
    group.add_command(_action_command(_name, _help))


@group.command("run")
@click.option("--broker", default=lambda: os.environ.get("HARKEN_BROKER", "mqtt://127.0.0.1:1883"),
              help="Broker URL (default $HARKEN_BROKER, then mqtt://127.0.0.1:1883).")
@click.option("--username", default=lambda: os.environ.get("HARKEN_MQTT_USERNAME"), help="MQTT user name.")
@click.option("--password", default=lambda: os.environ.get("HARKEN_MQTT_PASSWORD"),
              help="MQTT password (prefer $HARKEN_MQTT_PASSWORD).")
@click.option("--ca", "ca_file", type=click.Path(exists=True, dir_okay=False), help="CA certificate for mqtts://.")
@click.option("--public-key", "public_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help=KEY_HELP)
@click.option("--interval", default="2s", show_default=True, help="Time between controller ticks.")
@click.option("--chunk-bytes", type=int, default=256 * 1024, show_default=True,
              help="Bundles larger than this travel in chunks.")
@click.option("--prefix", default="harken/v1", show_default=True, help="Topic prefix.")
@click.option("--lease-ttl", default="90s", show_default=True,
              help="Lifetime of the controller's lease (database clock); another controller takes over this long "
                   "after this one died.")
@click.option("--once", is_flag=True, help="Tick once and exit.")
@registry_options
def run(broker, username, password, ca_file, public_keys, interval, chunk_bytes, prefix, lease_ttl, once, db_url,
        registry_dir) -> None:
    """Run the rollout controller on its own (the collector normally runs it)."""
    from cloud.delivery import Delivery, MqttPublisher
    from cloud.rollout.controller import Controller
    from cloud.rollout.plan import parse_duration
    from cloud.rollout.repo import SqlDesiredRevs
    from shared.topics import Topics

    period_s = parse_duration(interval)
    store, reg = open_registry(db_url, registry_dir, public_keys)
    publisher = MqttPublisher(broker, username=username, password=password, ca_file=ca_file)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        delivery = Delivery(publisher, SqlDesiredRevs(store), Topics(prefix), chunk_bytes=chunk_bytes)
        ctl = Controller(store, delivery, reg, lease_ttl_s=parse_duration(lease_ttl))
        while True:
            report = ctl.tick()
            if once:
                click.echo(json.dumps(report.__dict__))
                break
            if stop.wait(period_s):
                break
        ctl.release()
    finally:
        publisher.close()
        store.close()
