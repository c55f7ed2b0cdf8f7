"""Evaluation through onnxruntime: report fields, confusion PNG, CLI."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from cloud.cli.model import group as model_group
from cloud.lab import evaluate


def test_report_on_the_test_split_matches_the_training_run(tiny_bundle, tiny_lab):
    report = evaluate.evaluate(tiny_bundle, tiny_lab.data_dir, "test")
    assert report["n"] == 13 and report["dataset"]["matches_lineage"]
    assert np.sum(report["confusion"]) == 13
    assert abs(np.trace(report["confusion"]) / 13 - report["accuracy"]) < 1e-4
    # the same clips, gate and model as the run recorded in the bundle's metrics
    assert report["accuracy"] == tiny_bundle.manifest["metrics"]["accuracy"]
    assert report["confusion"] == tiny_bundle.manifest["metrics"]["confusion"]
    assert set(report["per_class"]) == set(tiny_bundle.labels)
    errors = 13 - int(np.trace(report["confusion"]))
    for row in report["slices"]:
        assert row["errors"] <= row["count"] and abs(row["data_share"] - row["count"] / 13) < 1e-9
        if errors:
            assert abs(row["error_share"] - row["errors"] / errors) < 1e-9


def test_all_split_covers_every_clip(tiny_bundle, tiny_lab):
    report = evaluate.evaluate(tiny_bundle, tiny_lab.data_dir, "all")
    assert report["n"] == 78 and sum(r["support"] for r in report["per_class"].values()) == 78


def test_cli_writes_report_and_confusion_png(tiny_lab, tmp_path):
    result = CliRunner().invoke(model_group, ["evaluate", str(tiny_lab.bundle_path), str(tiny_lab.data_dir),
                                              "--split", "dev", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["split"] == "dev" and report["n"] == 13
    png = tmp_path / "tiny-dev-confusion.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    assert json.loads((tmp_path / "tiny-dev-report.json").read_text())["accuracy"] == report["accuracy"]
    text = CliRunner().invoke(model_group, ["evaluate", str(tiny_lab.bundle_path), str(tiny_lab.data_dir),
                                            "--out", str(tmp_path)])
    assert text.exit_code == 0 and "slices by priority" in text.stdout and "confusion" in text.stdout
