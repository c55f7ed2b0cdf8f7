"""`harken samples`: field samples the devices uploaded — list, show, play, label, export; and
the collector's switches and requests to devices (published by the running collector)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

import click

from shared.cli_output import json_option, print_table
from shared.samples import REASONS

_DB_HELP = "Store URL (default $HARKEN_DB, then the config file's db_url, then sqlite:///./harken.db)."
_DIR_HELP = "Sample directory (default $HARKEN_SAMPLES_DIR, then the config file's samples_dir, then ./samples)."
PLAYERS = {"aplay": ["-q"], "paplay": [], "play": ["-q"], "ffplay": ["-nodisp", "-autoexit", "-loglevel", "error"]}


def _options(f):
    f = click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="Collector TOML configuration.")(f)
    f = click.option("--samples-dir", help=_DIR_HELP)(f)
    return click.option("--db", "db_url", help=_DB_HELP)(f)


def _open(db_url, samples_dir, config_file):
    """(store, SampleFiles) from flags, environment and the collector's configuration file."""
    from cloud.config import load_collector_config, resolve_db_url
    from cloud.samples.files import SampleFiles
    from cloud.store import open_store

    cfg = load_collector_config(config_file) if config_file else None
    folder = samples_dir or os.environ.get("HARKEN_SAMPLES_DIR") or (cfg.samples_dir if cfg else "samples")
    return open_store(resolve_db_url(db_url, cfg.db_url if cfg else "")), SampleFiles(folder)


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _dump(value) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


@click.group("samples")
def group() -> None:
    """List, play, label and export the field samples devices uploaded."""


@group.command("list")
@click.option("--device", help="Only this device.")
@click.option("--model", help="Only this model (a sha256 prefix).")
@click.option("--reason", type=click.Choice(REASONS), help="Only samples captured for this reason.")
@click.option("--label", help="Only samples whose latest label is this.")
@click.option("--alert", help="Only samples sent for this alert.")
@click.option("--unlabelled", is_flag=True, help="Only samples nobody labelled yet.")
@click.option("--conflicts", is_flag=True, help="Only samples whose labellers disagree.")
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@_options
@json_option()
def list_(device, model, reason, label, alert, unlabelled, conflicts, limit, db_url, samples_dir, config_file,
          as_json) -> None:
    """List samples, newest first, with what the model said and the latest label."""
    store, _ = _open(db_url, samples_dir, config_file)
    with store:
        rows = store.samples(device=device, model=model, reason=reason, label=label, alert=alert,
                             unlabelled=unlabelled, conflicts=conflicts, limit=limit)
        summary = store.sample_summary()
    if as_json:
        _dump({"summary": summary, "samples": rows})
        return
    click.echo(f"{summary['total']} samples: {summary['labelled']} labelled, {summary['unlabelled']} unlabelled, "
               f"{summary['conflicts']} in conflict; showing {len(rows)}")
    table = [{"id": s["id"], "device": s["device"], "received": _when(s["received_t"]), "reason": s["reason"],
              "said": s["predicted"], "conf": None if s["confidence"] is None else f"{s['confidence']:.2f}",
              "ms": f"{s['duration_ms']:.0f}", "label": (s["label"] or "-") + (" !" if s["conflict"] else ""),
              "alert": s["alert"]} for s in rows]
    if table:
        print_table(table, [("id", "ID"), ("device", "DEVICE"), ("received", "RECEIVED"), ("reason", "REASON"),
                            ("said", "SAID"), ("conf", "CONF"), ("ms", "MS"), ("label", "LABEL"), ("alert", "ALERT")],
                    right=("conf", "ms"))


list_.name = "list"


def _get(store, ref: str) -> dict:
    sample = store.sample(ref)
    if sample is None:
        raise click.ClickException(f"no sample {ref!r}; `harken samples list` shows them")
    return sample


@group.command("show")
@click.argument("sample_id")
@_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(sample_id, db_url, samples_dir, config_file, as_json) -> None:
    """Show one sample: where and why it was captured, what the model said, its label history."""
    store, files = _open(db_url, samples_dir, config_file)
    with store:
        s = _get(store, sample_id)
    s["file"] = str(files.path(s["sha256"]))
    s["file_ok"] = files.verify(s["sha256"])
    if as_json:
        _dump(s)
        return
    for key in ("id", "sha256", "device", "model", "utterance", "reason", "alert", "predicted", "confidence",
                "duration_ms", "size_bytes", "label", "conflict", "file", "file_ok"):
        click.echo(f"{key:12} {s[key] if s[key] is not None else '-'}")
    click.echo(f"{'captured':12} {_when(s['captured_t'])} (device clock)")
    click.echo(f"{'received':12} {_when(s['received_t'])}")
    for h in s["labels"]:
        click.echo(f"  {_when(h['t'])}  {h['by']:16} {h['label']}")


@group.command("play")
@click.argument("sample_id")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="Write the WAV here instead of playing.")
@_options
def play(sample_id, out, db_url, samples_dir, config_file) -> None:
    """Play a sample (aplay, paplay, play or ffplay), or write its WAV file with --out."""
    store, files = _open(db_url, samples_dir, config_file)
    with store:
        s = _get(store, sample_id)
    data = files.read(s["sha256"])
    if out:
        with open(out, "wb") as f:
            f.write(data)
        click.echo(f"wrote {out} ({len(data)} bytes, {s['duration_ms']:.0f} ms)")
        return
    player = next((p for p in PLAYERS if shutil.which(p)), None)
    if player is None:
        raise click.ClickException(f"no audio player found ({', '.join(PLAYERS)}); install alsa-utils or write "
                                   "the file with --out FILE")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{s['id']}.wav")
        with open(path, "wb") as f:
            f.write(data)
        subprocess.run([player, *PLAYERS[player], path], check=False)


@group.command("label")
@click.argument("sample_id")
@click.argument("label")
@click.option("--by", default=lambda: os.environ.get("USER") or "cli", show_default="$USER",
              help="Who labels (recorded with the label).")
@click.option("--new-label", is_flag=True, help="Allow a label the sample's model does not have.")
@click.option("--registry", "registry_dir", help="Registry directory (the model's labels; default $HARKEN_REGISTRY, "
                                                 "then ./registry).")
@_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def label(sample_id, label, by, new_label, registry_dir, db_url, samples_dir, config_file, as_json) -> None:
    """Label a sample (one of its model's labels); every label is kept with who gave it and when."""
    from cloud.registry import Registry
    from cloud.samples.labels import label_sample

    store, _ = _open(db_url, samples_dir, config_file)
    with store:
        registry = Registry(store, registry_dir or os.environ.get("HARKEN_REGISTRY") or "registry", [])
        s = label_sample(store, sample_id, label, by=by, registry=registry, allow_new=new_label)
    if as_json:
        _dump(s)
        return
    click.echo(f"{s['id']}: {s['label']} (by {by})" + (" — the labellers disagree: a conflict" if s["conflict"]
                                                       else ""))


@group.command("export")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--model", help="Only this model (a sha256 prefix).")
@click.option("--device", help="Only this device.")
@click.option("--skip-conflicts", is_flag=True, help="Leave out samples whose labellers disagree.")
@_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def export(out_dir, model, device, skip_conflicts, db_url, samples_dir, config_file, as_json) -> None:
    """Write labelled samples as OUT_DIR/<label>/<id>.wav plus samples.json (for `harken data import`)."""
    from cloud.samples.export import export_samples

    store, files = _open(db_url, samples_dir, config_file)
    with store:
        report = export_samples(store, files, out_dir, model=model, device=device, skip_conflicts=skip_conflicts)
    if as_json:
        _dump(report)
        return
    labels = ", ".join(f"{k} {v}" for k, v in report["by_label"].items()) or "none"
    click.echo(f"exported {report['exported']} samples to {out_dir} ({labels}); {report['conflicts']} in conflict")
    if report["missing_files"]:
        click.echo(f"warning: {len(report['missing_files'])} sample file(s) missing or damaged, left out: "
                   f"{', '.join(report['missing_files'][:10])}", err=True)


@group.command("enable")
@click.argument("devices", nargs=-1, required=True)
@_options
def enable(devices, db_url, samples_dir, config_file) -> None:
    """Resume uploads on opted-in DEVICES (desired state; the collector publishes it)."""
    _switch(devices, True, db_url, samples_dir, config_file)


@group.command("disable")
@click.argument("devices", nargs=-1, required=True)
@_options
def disable(devices, db_url, samples_dir, config_file) -> None:
    """Stop uploads on DEVICES (desired state; the collector publishes it)."""
    _switch(devices, False, db_url, samples_dir, config_file)


def _switch(devices, on: bool, db_url, samples_dir, config_file) -> None:
    from cloud.samples import control

    store, _ = _open(db_url, samples_dir, config_file)
    with store:
        cmd = control.switch(store, devices, on, actor=os.environ.get("USER") or "cli")
    click.echo(f"{cmd['id']}: uploads {'on' if on else 'off'} for {', '.join(cmd['devices'])} "
               "(the running collector publishes it)")


@group.command("request")
@click.argument("alert_id")
@click.option("--before", "before_s", type=float, default=300.0, show_default=True,
              help="Seconds before the alert's onset.")
@click.option("--after", "after_s", type=float, default=600.0, show_default=True, help="Seconds after now.")
@click.option("--max-clips", type=int, default=20, show_default=True, help="Clips per device, at most.")
@click.option("--device", "devices", multiple=True, help="Ask these devices (default: those driving the alert).")
@_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def request(alert_id, before_s, after_s, max_clips, devices, db_url, samples_dir, config_file, as_json) -> None:
    """Ask the devices of an open alert for the utterances around it (opted-in devices answer)."""
    from cloud.samples import control

    store, _ = _open(db_url, samples_dir, config_file)
    with store:
        cmd = control.request_alert(store, alert_id, actor=os.environ.get("USER") or "cli", before_s=before_s,
                                    after_s=after_s, max_clips=max_clips, devices=list(devices) or None)
    if as_json:
        _dump(cmd)
        return
    click.echo(f"{cmd['id']}: request {cmd['request']} to {', '.join(cmd['devices'])} for {_when(cmd['from_t'])} .. "
               f"{_when(cmd['to_t'])}, at most {max_clips} clips each (the running collector publishes it)")
