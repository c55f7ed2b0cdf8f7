"""Experiment tracking: the run store and the `harken runs` commands."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cloud.cli.runs import group as runs_group
from cloud.lab.runs import RunStore, compare, flat_metrics
from shared.errors import ConfigError


def _record(run_id, created, accuracy, alpha=0.01):
    return {"id": run_id, "created": created, "code_revision": "abc", "dataset_hash": "d" * 64, "seed": 0,
            "hyperparameters": {"alpha": alpha, "hidden_layers": [32]},
            "metrics": {"accuracy": accuracy, "baselines": {"majority": 0.08},
                        "per_class": {"yes": {"f1": accuracy}}, "confusion": [[1]]},
            "artifacts": {"bundle": f"/tmp/{run_id}.hkb"}}


def test_store_lists_newest_first_and_finds_by_prefix(tmp_path):
    store = RunStore(tmp_path)
    store.save(_record("20260101-000000-aaaaaa", "2026-01-01T00:00:00+00:00", 0.9))
    store.save(_record("20260102-000000-bbbbbb", "2026-01-02T00:00:00+00:00", 0.95))
    assert [r["id"] for r in store.list()] == ["20260102-000000-bbbbbb", "20260101-000000-aaaaaa"]
    assert store.get("20260101")["metrics"]["accuracy"] == 0.9
    with pytest.raises(ConfigError, match="matches 2 runs"):
        store.get("2026")
    with pytest.raises(ConfigError, match="no run"):
        store.get("nope")


def test_compare_reports_deltas_and_changed_hyperparameters():
    a = _record("a", "t1", 0.90, alpha=0.01)
    b = _record("b", "t2", 0.95, alpha=0.1)
    diff = compare(a, b)
    assert diff["metrics"]["accuracy"]["delta"] == pytest.approx(0.05)
    assert diff["metrics"]["per_class.yes.f1"]["delta"] == pytest.approx(0.05)
    assert diff["hyperparameters_changed"] == {"alpha": {"a": 0.01, "b": 0.1}}
    assert "confusion" not in " ".join(flat_metrics(a))


def test_cli_list_show_compare_on_the_real_training_run(tiny_lab, tmp_path, monkeypatch):
    store_dir = tmp_path / "runs"
    real = json.loads((tiny_lab.runs_dir / f"{tiny_lab.record['id']}.json").read_text())
    RunStore(store_dir).save(real)
    RunStore(store_dir).save(dict(_record("20990101-000000-cccccc", "2099-01-01T00:00:00+00:00", 0.5)))
    monkeypatch.setenv("HARKEN_RUNS_DIR", str(store_dir))
    runner = CliRunner()
    listed = runner.invoke(runs_group, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == ["20990101-000000-cccccc", real["id"]]
    assert rows[1]["accuracy"] == real["metrics"]["accuracy"]
    shown = runner.invoke(runs_group, ["show", real["id"][:18], "--json"])
    assert json.loads(shown.stdout)["dataset_hash"] == real["dataset_hash"]
    text = runner.invoke(runs_group, ["show", real["id"]])
    assert real["dataset_hash"] in text.stdout and "hyperparameters" in text.stdout
    cmp = runner.invoke(runs_group, ["compare", real["id"], "20990101", "--json"])
    diff = json.loads(cmp.stdout)
    assert diff["metrics"]["accuracy"]["delta"] == pytest.approx(0.5 - real["metrics"]["accuracy"])
    other = runner.invoke(runs_group, ["list", "--runs-dir", str(tiny_lab.runs_dir)])
    assert real["id"] in other.stdout and "2099" not in other.stdout
    missing = runner.invoke(runs_group, ["show", "zzz"])
    assert missing.exit_code != 0 and isinstance(missing.exception, ConfigError)
