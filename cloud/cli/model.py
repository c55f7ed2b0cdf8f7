"""``harken model``: train, evaluate, inspect and verify model bundles (the lab's commands)."""
from __future__ import annotations

import json
import sys
import logging
import os
import time
from pathlib import Path

import click

from shared import bundle as bundle_format
from shared import keys
from shared.cli_output import print_table
from shared.errors import ConfigError

log = logging.getLogger(__name__)

KEY_ENV = "HARKEN_SIGNING_KEY"


@click.group(name="model")
def group() -> None:
    """Train, evaluate, inspect, verify, release and register model bundles."""


def _stderr_progress(stage: str, total: int):
    return click.progressbar(length=max(1, total), label=stage, file=sys.stderr)


def _default_key() -> Path:
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    return Path.home() / ".harken" / "keys" / keys.PRIVATE_NAME


@group.command("train")
@click.argument("data", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Bundle file to write (.hkb).")
@click.option("--seed", default=0, show_default=True, type=int, help="Split and training seed.")
@click.option("--key", "key_path", type=click.Path(dir_okay=False), default=None,
              help=f"Ed25519 signing key (default ${KEY_ENV} or ~/.harken/keys/signing.key).")
@click.option("--name", default="harken-kws", show_default=True, help="Model name in the manifest.")
@click.option("--version", "version", default="0.1.0", show_default=True, help="Model version in the manifest.")
@click.option("--runs-dir", type=click.Path(file_okay=False), default=None,
              help="Experiment store (default $HARKEN_RUNS_DIR or ~/.harken/runs).")
@click.option("--leave-one-engine-out/--no-leave-one-engine-out", "leave_one_engine_out", default=False,
              show_default=True, help="Also train a model without each speech engine and test it on that engine.")
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")
def train_cmd(data, out, seed, key_path, name, version, runs_dir, leave_one_engine_out, as_json) -> None:
    """Train on DATA (through the device's gate), evaluate, and write one signed bundle."""
    from cloud.lab import pipeline

    key_file = Path(key_path) if key_path else _default_key()
    if not key_file.is_file():
        raise ConfigError(f"signing key {key_file} not found; create one with "
                          f"`harken keys generate {key_file.parent}` or pass --key")
    record = pipeline.run(pipeline.TrainRequest(
        data_dir=data, out=out, private_key=keys.load_private_key(key_file), seed=seed, name=name,
        version=version, runs_dir=runs_dir, leave_one_engine_out=leave_one_engine_out, progress=_stderr_progress))
    if as_json:
        click.echo(json.dumps(record, indent=1))
        return
    m = record["metrics"]
    click.echo(f"run {record['id']}: bundle {out} ({record['artifacts']['bundle_bytes'] / 1024:.0f} KB, "
               f"model sha256 {record['artifacts']['model_sha256'][:16]}...)")
    click.echo(f"test accuracy {m['accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}  min F1 {m['min_f1']:.4f}  "
               f"stream accuracy {m['stream_accuracy']:.4f}")
    click.echo("baselines: " + ", ".join(f"{k} {v:.4f}" for k, v in m["baselines"].items())
               + f"  | bundle vs scikit-learn agreement {m['sklearn_agreement']:.4%}")
    click.echo(f"confidence threshold {m['threshold']['value']} (dev coverage {m['threshold']['dev_coverage']:.1%})"
               f"; timings {record['timings']}")
    if m.get("leave_one_engine_out"):
        from cloud.lab import loeo

        click.echo("leave one engine out (stream accuracy on the engine's test clips):\n"
                   + loeo.table_text(m["leave_one_engine_out"]))


@group.command("evaluate")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(exists=True, dir_okay=False))
@click.argument("data", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["train", "dev", "test", "all"]), help="Which clips to evaluate on.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Directory for the JSON report and confusion PNG (default: next to the bundle).")
@click.option("--leave-one-engine-out", "leave_one_engine_out", is_flag=True,
              help="Also retrain without each speech engine (the bundle's recipe) and test on that engine.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def evaluate_cmd(bundle_path, data, split, out_dir, leave_one_engine_out, as_json) -> None:
    """Run BUNDLE with onnxruntime on a split of DATA: metrics, confusion, slice table."""
    from cloud.lab import evaluate, loeo, metrics, slices

    b = bundle_format.load_bundle(bundle_path, None, require_signature=False)
    with _stderr_progress(f"evaluating {split}", 1) as bar:
        report = evaluate.evaluate(b, data, split, progress=bar.update)
    if leave_one_engine_out:
        with _stderr_progress("leaving one engine out", 3) as bar:
            report["leave_one_engine_out"] = evaluate.leave_one_engine_out(b, data, progress=bar.update)
    held_out = report.get("leave_one_engine_out") or (b.manifest.get("metrics") or {}).get("leave_one_engine_out")
    stem = f"{Path(bundle_path).stem}-{split}"
    report["files"] = evaluate.write_report(report, out_dir or Path(bundle_path).parent, stem)
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    click.echo(f"{report['bundle']['name']} {report['bundle']['version']} on {split} "
               f"({report['n']} clips): accuracy {report['accuracy']:.4f}, macro F1 {report['macro_f1']:.4f}")
    if not report["dataset"]["matches_lineage"]:
        click.echo("note: this dataset is not the one the bundle was trained on (hash differs)")
    scores = ("precision", "recall", "f1")
    print_table([{"label": name, **{k: f"{row[k]:.3f}" for k in scores}, "support": row["support"]}
                 for name, row in report["per_class"].items()],
                [("label", "label"), *((k, k) for k in scores), ("support", "support")], right=(*scores, "support"))
    click.echo("\nconfusion (rows true, columns predicted):\n" + metrics.confusion_text(report["confusion"], report["labels"]))
    click.echo("\nslices by priority:\n" + slices.table_text(report["slices"]))
    if held_out and held_out.get("engines"):
        when = "" if "leave_one_engine_out" in report else " (recorded at training)"
        click.echo(f"\nleave one engine out{when}, stream accuracy on the engine's test clips:\n"
                   + loeo.table_text(held_out))
    click.echo(f"\nwrote {report['files']['report']} and {report['files']['confusion_png']}")


def _summary(b: bundle_format.Bundle, path: str) -> dict:
    m = b.manifest
    metrics = m.get("metrics", {})
    return {
        "path": path, "name": m.get("name"), "version": m.get("version"), "created": m.get("created"),
        "model_sha256": b.sha256, "bundle_sha256": b.bundle_sha256, "signed": b.signature is not None,
        "format": m.get("format"), "labels": b.labels, "sample_rate": m.get("sample_rate"),
        "input_samples": b.input_samples, "placement": b.placement, "opset": m.get("opset"),
        "confidence_threshold": m.get("confidence_threshold"),
        "sizes": {"bundle_bytes": len(b.raw), "model_bytes": len(b.model_bytes),
                  **{f"{k}_bytes": len(v) for k, v in b.files.items()}},
        "metrics": {k: metrics.get(k) for k in ("accuracy", "macro_f1", "min_f1", "stream_accuracy",
                                                 "sklearn_agreement", "baselines", "leave_one_engine_out")},
        "lineage": m.get("lineage"), "feature_names": m.get("feature_names"),
        "release": _release_summary(b),
    }


def _release_summary(b: bundle_format.Bundle) -> dict | None:
    """The release as written (not verified: `harken model verify --release-key` does that)."""
    from shared.errors import ReleaseError
    from shared.release import read_release

    try:
        rel = read_release(b)
    except ReleaseError as exc:
        return {"error": str(exc)}
    return rel.as_dict() if rel is not None else None


@group.command("inspect")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def inspect_cmd(bundle_path, as_json) -> None:
    """Show a bundle's name, version, sha, labels, sizes, metrics and lineage (no signature check)."""
    b = bundle_format.load_bundle(bundle_path, None, require_signature=False)
    info = _summary(b, bundle_path)
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    click.echo(f"{info['name']} {info['version']}  ({info['format']}, created {info['created']})")
    click.echo(f"model sha256  {info['model_sha256']}")
    click.echo(f"bundle sha256 {info['bundle_sha256']}")
    click.echo(f"signed        {'yes (verify with `harken model verify --public-key`)' if info['signed'] else 'NO'}")
    rel = info["release"]
    if rel is None:
        click.echo("release       none (`harken model release` signs what may reach devices)")
    elif "error" in rel:
        click.echo(f"release       unreadable: {rel['error']}")
    else:
        from shared.release import when

        click.echo(f"release       version {rel['version']} by key {rel['key_id']}, until {when(rel['expires_t'])}, "
                   f"automation up to {rel['max_automation']} (not verified)")
    click.echo(f"labels        {', '.join(info['labels'])}")
    click.echo(f"input         {info['input_samples']} samples at {info['sample_rate']} Hz, placement "
               f"{info['placement']}, opset {info['opset']}, threshold {info['confidence_threshold']}")
    click.echo("sizes         " + ", ".join(f"{k} {v}" for k, v in info["sizes"].items()))
    click.echo("metrics       " + json.dumps(info["metrics"]))
    from cloud.cli.registry import echo_lineage

    echo_lineage(b.manifest)


@group.command("verify")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(exists=True, dir_okay=False))
@click.option("--public-key", "public_keys", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Trusted signing.pub (repeat for several).")
@click.option("--release-key", "release_keys", multiple=True, type=click.Path(dir_okay=False),
              help="Trusted release.pub: also verify the release as a device would (repeat for several).")
def verify_cmd(bundle_path, public_keys, release_keys) -> None:
    """Check the signature, every member's sha256 and (with --release-key) the release of BUNDLE."""
    from shared.release import read_release, verify_release, when

    trusted = [keys.load_public_key(p) for p in public_keys]
    b = bundle_format.load_bundle(bundle_path, trusted)
    click.echo(f"OK {b.manifest['name']} {b.manifest['version']} model sha256 {b.sha256} (signature verified, "
               f"model and {len(b.files)} listed file(s) match the manifest, no unlisted member)")
    if release_keys:
        rel = verify_release(b, [keys.load_public_key(p) for p in release_keys], now=time.time(), label=bundle_path)
        click.echo(f"release verified: {rel.label} by key {rel.key_id}, installable until {when(rel.expires_t)}, "
                   f"automation up to {rel.max_automation}")
    elif b.release is not None:
        click.echo(f"carries a release ({read_release(b).label}), not verified: pass --release-key release.pub")
    else:
        click.echo("no release: devices that require releases refuse it until `harken model release` signs one")


def _add_registry() -> None:
    from cloud.cli.registry import add_registry_commands
    from cloud.cli.release import add_release_commands

    add_registry_commands(group)
    add_release_commands(group)


_add_registry()  # register, list, show, alias, diff, release, revoke: the registry side of the model group
