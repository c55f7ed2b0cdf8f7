"""``harken runs``: list, show and compare recorded training runs."""
from __future__ import annotations

import json
import logging

import click

from cloud.lab.runs import ENV, RunStore, compare
from shared.cli_output import json_option, print_json, print_table

log = logging.getLogger(__name__)

runs_dir_option = click.option("--runs-dir", type=click.Path(file_okay=False), default=None,
                               help=f"Experiment store (default ${ENV} or ~/.harken/runs).")


@click.group(name="runs")
def group() -> None:
    """List, show and compare training runs."""


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


@group.command("list")
@runs_dir_option
@json_option("Print as JSON.")
def list_cmd(runs_dir, as_json) -> None:
    """List runs, newest first."""
    store = RunStore(runs_dir)
    rows = [{"id": r.get("id"), "created": r.get("created"), "dataset_hash": r.get("dataset_hash"),
             "code_revision": r.get("code_revision"), "accuracy": r.get("metrics", {}).get("accuracy"),
             "stream_accuracy": r.get("metrics", {}).get("stream_accuracy"),
             "bundle": r.get("artifacts", {}).get("bundle")} for r in store.list()]
    if as_json:
        print_json(rows, indent=1)
        return
    table = [{**r, "dataset": str(r["dataset_hash"])[:12], "accuracy": _fmt(r["accuracy"]),
              "stream": _fmt(r["stream_accuracy"])} for r in rows]
    print_table(table, [("id", "ID"), ("created", "CREATED"), ("dataset", "DATASET"), ("accuracy", "ACCURACY"),
                        ("stream", "STREAM"), ("bundle", "BUNDLE")],
                right=("accuracy", "stream"), empty=f"no runs in {store.directory}")


@group.command("show")
@click.argument("run_id")
@runs_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
def show_cmd(run_id, runs_dir, as_json) -> None:
    """Show one run (an unambiguous id prefix is enough)."""
    r = RunStore(runs_dir).get(run_id)
    if as_json:
        click.echo(json.dumps(r, indent=1))
        return
    m = r.get("metrics", {})
    click.echo(f"run {r['id']}  created {r.get('created')}  code {r.get('code_revision')}")
    click.echo(f"dataset {r.get('dataset_hash')}  ({r.get('dataset_path')})")
    click.echo(f"split {json.dumps(r.get('split', {}).get('sizes'))}  seed {r.get('seed')}")
    click.echo(f"hyperparameters {json.dumps(r.get('hyperparameters'))}")
    click.echo(f"accuracy {_fmt(m.get('accuracy'))}  macro F1 {_fmt(m.get('macro_f1'))}  "
               f"min F1 {_fmt(m.get('min_f1'))}  stream {_fmt(m.get('stream_accuracy'))}  "
               f"baselines {json.dumps(m.get('baselines'))}")
    for name, row in (m.get("per_class") or {}).items():
        click.echo(f"  {name:<12} f1 {row['f1']:.3f}  support {row['support']}")
    click.echo(f"timings {json.dumps(r.get('timings'))}")
    click.echo(f"artifacts {json.dumps(r.get('artifacts'))}")


@group.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@runs_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def compare_cmd(run_a, run_b, runs_dir, as_json) -> None:
    """Compare two runs: settings, changed hyperparameters, metrics and their deltas (B - A)."""
    store = RunStore(runs_dir)
    diff = compare(store.get(run_a), store.get(run_b))
    if as_json:
        click.echo(json.dumps(diff, indent=1))
        return
    click.echo(f"A {diff['a']}\nB {diff['b']}")
    for k, v in diff["settings"].items():
        same = "" if v["a"] == v["b"] else "   <- differs"
        click.echo(f"{k:<16}{_fmt(v['a'])[:20]:<22}{_fmt(v['b'])[:20]:<22}{same}")
    for k, v in diff["hyperparameters_changed"].items():
        click.echo(f"hp {k:<13}{_fmt(v['a']):<22}{_fmt(v['b']):<22}")
    print_table([{"metric": k, **{side: _fmt(v[side]) for side in ("a", "b", "delta")}}
                 for k, v in diff["metrics"].items()
                 if not k.startswith(("per_class.", "stream.", "gate_missed_test.", "threshold."))],
                [("metric", "metric"), ("a", "A"), ("b", "B"), ("delta", "B - A")], right=("a", "b", "delta"))
