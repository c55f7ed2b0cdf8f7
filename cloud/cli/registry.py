"""Registry commands for `harken model`: register, list, show, alias, diff.

The ``model`` group belongs to the model lab; ``add_registry_commands(group)`` adds these
commands to it. The store is ``--db`` (else $HARKEN_DB, else sqlite:///./harken.db), the
bundle directory ``--registry`` (else $HARKEN_REGISTRY, else ./registry).
"""
from __future__ import annotations

import json
import os
import time

import click

from shared.cli_output import json_option, print_json, print_table

DB_HELP = "Store URL (default $HARKEN_DB, then sqlite:///./harken.db)."
REGISTRY_HELP = "Directory of registered bundles (default $HARKEN_REGISTRY, then ./registry)."
KEY_HELP = "Trusted public key (signing.pub); repeat for several (default $HARKEN_PUBLIC_KEY)."


def registry_options(f):
    f = click.option("--registry", "registry_dir", help=REGISTRY_HELP)(f)
    return click.option("--db", "db_url", help=DB_HELP)(f)


def open_registry(db_url: str | None, registry_dir: str | None, public_keys=()):
    """(store, Registry) from flags and environment; close the store when done."""
    from cloud.config import resolve_db_url
    from cloud.registry import Registry
    from cloud.store import open_store
    from shared import keys

    paths = list(public_keys) or [p for p in os.environ.get("HARKEN_PUBLIC_KEY", "").split(os.pathsep) if p]
    store = open_store(resolve_db_url(db_url))
    directory = registry_dir or os.environ.get("HARKEN_REGISTRY") or "registry"
    return store, Registry(store, directory, [keys.load_public_key(p) for p in paths])


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


@click.command("register")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@registry_options
@click.option("--public-key", "public_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help=KEY_HELP)
@click.option("--alias", "aliases", multiple=True, help="Also point this alias at it (e.g. candidate).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def register(bundle, db_url, registry_dir, public_keys, aliases, as_json) -> None:
    """Verify a bundle's signature and store it in the registry by its sha256."""
    store, reg = open_registry(db_url, registry_dir, public_keys)
    with store:
        if not reg.public_keys:
            raise click.UsageError("no trusted public key: pass --public-key signing.pub or set HARKEN_PUBLIC_KEY")
        rec, new = reg.register(bundle)
        for name in aliases:
            rec = reg.set_alias(name, rec.sha256)
    if as_json:
        click.echo(json.dumps({"new": new, **rec.summary()}, indent=2))
        return
    verb = "registered" if new else "already registered"
    click.echo(f"{verb} {rec.label} {rec.sha256[:12]} ({rec.size_bytes} bytes, run {rec.run_id or '-'}, "
               f"dataset {(rec.dataset_hash or '-')[:12]})" + (f"; aliases {', '.join(rec.aliases)}" if rec.aliases
                                                               else ""))


@click.command("list")
@registry_options
@json_option()
def list_models(db_url, registry_dir, as_json) -> None:
    """List registered models, oldest first, with accuracy and aliases."""
    store, reg = open_registry(db_url, registry_dir)
    with store:
        models = reg.list()
    if as_json:
        print_json([m.summary() | {"metrics": m.metrics} for m in models], default=str)
        return
    rows = [{"sha": m.sha256[:12], "label": m.label, "acc": _num(m.metrics.get("accuracy")),
             "f1": _num(m.metrics.get("macro_f1")), "registered": _when(m.registered_t), "run": m.run_id,
             "aliases": ", ".join(m.aliases)} for m in models]
    print_table(rows, [("sha", "SHA"), ("label", "NAME:VERSION"), ("acc", "ACC"), ("f1", "F1"),
                       ("registered", "REGISTERED"), ("run", "RUN"), ("aliases", "ALIASES")],
                right=("acc", "f1"), empty="no models registered; `harken model register BUNDLE` adds one")


def _num(x) -> str:
    return "-" if x is None else f"{x:.3f}"


@click.command("show")
@click.argument("version")
@registry_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the whole manifest).")
def show(version, db_url, registry_dir, as_json) -> None:
    """Show one model: identity, lineage, metrics (VERSION: alias, name:version or sha prefix)."""
    store, reg = open_registry(db_url, registry_dir)
    with store:
        m = reg.resolve(version)
    if as_json:
        click.echo(json.dumps(m.as_dict(), indent=2, default=str))
        return
    for key, value in (("sha256", m.sha256), ("bundle_sha256", m.bundle_sha256), ("name", m.name),
                       ("version", m.version), ("size_bytes", m.size_bytes), ("path", m.path),
                       ("run_id", m.run_id), ("dataset_hash", m.dataset_hash), ("parent", m.parent),
                       ("created", m.created), ("signer", m.signer), ("registered", _when(m.registered_t)),
                       ("aliases", ", ".join(m.aliases)), ("labels", ", ".join(m.manifest.get("labels", [])))):
        click.echo(f"{key:14} {value if value not in (None, '') else '-'}")
    click.echo(f"{'release':14} {_release_line(m.path)}")
    for key in ("accuracy", "macro_f1", "min_f1"):
        if key in m.metrics:
            click.echo(f"{key:14} {_num(m.metrics[key])}")
    for label, pc in (m.metrics.get("per_class") or {}).items():
        click.echo(f"  f1 {label:10} {_num(pc.get('f1'))}")
    echo_lineage(m.manifest)


def echo_lineage(manifest: dict) -> None:
    """The walk from the model back to its datasets, their parts and the field samples."""
    from cloud.lab import lineage
    from cloud.lab.loeo_table import table_text

    click.echo("lineage")
    for line in lineage.walk(manifest.get("lineage") or {}):
        click.echo(f"  {line}")
    held_out = (manifest.get("metrics") or {}).get("leave_one_engine_out")
    if held_out and held_out.get("engines"):
        click.echo("leave one engine out (stream accuracy)")
        for line in table_text(held_out).splitlines():
            click.echo(f"  {line}")


def _release_line(path: str) -> str:
    """The stored bundle's release as written (devices verify it; `harken model verify --release-key` too)."""
    from shared.bundle import load_bundle
    from shared.errors import HarkenError
    from shared.release import read_release, when

    try:
        rel = read_release(load_bundle(path, None, require_signature=False))
    except HarkenError as exc:
        return f"unreadable: {exc}"
    if rel is None:
        return "none: devices that require releases refuse it (`harken model release`, then register again)"
    return f"version {rel.version} by key {rel.key_id} until {when(rel.expires_t)}, automation up to {rel.max_automation}"


@click.command("alias")
@click.argument("name")
@click.argument("version")
@registry_options
def alias(name, version, db_url, registry_dir) -> None:
    """Point alias NAME (e.g. production, candidate) at VERSION."""
    store, reg = open_registry(db_url, registry_dir)
    with store:
        m = reg.set_alias(name, version)
    click.echo(f"{name} → {m.label} {m.sha256[:12]}")


@click.command("diff")
@click.argument("a")
@click.argument("b")
@registry_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def diff(a, b, db_url, registry_dir, as_json) -> None:
    """Compare two models: evaluation metrics and reference profiles (B against A)."""
    from cloud.registry_diff import diff_models

    store, reg = open_registry(db_url, registry_dir)
    with store:
        d = diff_models(reg.resolve(a), reg.resolve(b))
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(f"A {d['a']['label']} {d['a']['sha256'][:12]}   B {d['b']['label']} {d['b']['sha256'][:12]}"
               f"   same dataset: {'yes' if d['same_dataset'] else 'no'}")
    rows = [(k, d["metrics"][k]) for k in ("accuracy", "macro_f1")]
    rows += [(f"f1 {label}", v) for label, v in d["metrics"]["per_class_f1"].items()]
    print_table([{"metric": name, "a": _num(v["a"]), "b": _num(v["b"]),
                  "delta": None if v["delta"] is None else f"{v['delta']:+.4f}"} for name, v in rows],
                [("metric", "metric"), ("a", "A"), ("b", "B"), ("delta", "B-A")], right=("a", "b", "delta"))
    prof = d["profile"]
    if not prof.get("comparable"):
        click.echo(f"profiles: {prof.get('reason')}")
        return
    feats = prof["features"]
    comparable = [f for f in feats if f["comparable"]]
    click.echo(f"feature PSI ({len(comparable)} of {len(feats)} features share bin edges):")
    for f in sorted(comparable, key=lambda f: -f["psi"])[:10]:
        click.echo(f"  {f['name']:24} {f['psi']:.4f}")
    for name, value in prof["scalars"].items():
        click.echo(f"  {name:24} {value:.4f}")
    labels = prof["labels"]
    click.echo(f"label mix PSI {_num(labels['psi'])}: A {labels['a']}  B {labels['b']}")


def add_registry_commands(group: click.Group) -> click.Group:
    """Add register, list, show, alias and diff to the lab's ``model`` group."""
    for command in (register, list_models, show, alias, diff):
        group.add_command(command)
    return group
