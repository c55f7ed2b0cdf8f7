"""Leave one engine out, end to end on a tiny real dataset from all six engines:
`harken model train --leave-one-engine-out` records per-engine figures in the run record and
the bundle, and `harken model show` prints them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cloud.lab import dataset, engines, infer, loeo, splits, stream
from shared import keys
from shared.audio import read_wav
from shared.bundle import load_bundle
from shared.cli import main
from shared.gate import GateConfig


@pytest.fixture(scope="module")
def loeo_run(engines_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loeo")
    private, public = keys.generate_keypair(tmp / "keys")
    bundle = tmp / "m.hkb"
    code = main(["model", "train", str(engines_data), "--out", str(bundle), "--key", str(private),
                 "--runs-dir", str(tmp / "runs"), "--leave-one-engine-out", "--json"])
    assert code == 0
    record = json.loads(next((tmp / "runs").glob("*.json")).read_text())
    return record, load_bundle(bundle, [keys.load_public_key(public)]), tmp


def test_each_engine_is_held_out_and_counted(loeo_run, engines_data):
    record, bundle, _ = loeo_run
    result = record["metrics"]["leave_one_engine_out"]
    assert bundle.manifest["metrics"]["leave_one_engine_out"] == result
    ds = dataset.load(engines_data)
    sp = splits.split(ds.clips, ds.labels, seed=0)
    assert set(result["engines"]) == set(engines.ENGINES)
    for engine, row in result["engines"].items():
        test = [i for i in sp.indices["test"] if ds.clips[i].tags.get("engine") == engine]
        train_without = [i for i in sp.indices["train"] if ds.clips[i].tags.get("engine") != engine]
        assert row["test_clips"] == len(test) > 0
        assert row["train_clips"] == len(train_without) < len(sp.indices["train"])
        assert sum(v["test_clips"] for v in row["by_voice"].values()) == len(test)
        assert 0.0 <= row["held_out"] <= 1.0 and 0.0 <= row["in_distribution"] <= 1.0
    assert result["min_held_out"] == min(r["held_out"] for r in result["engines"].values())
    assert record["timings"]["loeo_s"] > 0


def test_in_distribution_figure_is_the_bundles_stream_accuracy_on_that_engine(loeo_run, engines_data):
    """Recomputed independently: the bundle itself (onnxruntime) on the engine's test clips as one stream."""
    record, bundle, _ = loeo_run
    ds = dataset.load(engines_data)
    sp = splits.split(ds.clips, ds.labels, seed=0)
    sess = infer.session(bundle.model_bytes)
    index = {n: i for i, n in enumerate(bundle.labels)}
    for engine, row in record["metrics"]["leave_one_engine_out"]["engines"].items():
        test = [i for i in sp.indices["test"] if ds.clips[i].tags.get("engine") == engine]
        result = stream.stream_accuracy(
            [read_wav(ds.path_of(ds.clips[i])) for i in test],
            np.array([index[ds.clips[i].label] for i in test]), index["_silence_"],
            lambda w: infer.run(sess, w).label, GateConfig.from_dict(bundle.manifest["gate"]),
            bundle.placement, bundle.input_samples, seed=0)
        assert result.accuracy == pytest.approx(row["in_distribution"], abs=1e-4), engine


def test_show_and_inspect_print_the_table(loeo_run, capsys):
    record, bundle, tmp = loeo_run
    db, reg = f"sqlite:///{tmp / 'reg.db'}", str(tmp / "registry")
    pub = tmp / "keys" / keys.PUBLIC_NAME
    assert main(["model", "register", record["artifacts"]["bundle"], "--db", db, "--registry", reg,
                 "--public-key", str(pub)]) == 0
    capsys.readouterr()
    assert main(["model", "show", bundle.sha256[:12], "--db", db, "--registry", reg]) == 0
    shown = capsys.readouterr().out
    assert "leave one engine out" in shown
    for engine, row in record["metrics"]["leave_one_engine_out"]["engines"].items():
        line = next(x for x in shown.splitlines() if x.strip().startswith(engine))
        assert f"{row['held_out']:.4f}" in line and f"{row['in_distribution']:.4f}" in line
    assert main(["model", "inspect", record["artifacts"]["bundle"]]) == 0
    assert "leave one engine out" in capsys.readouterr().out


def test_a_single_engine_dataset_has_nothing_to_leave_out(tiny_lab):
    ds = dataset.load(tiny_lab.data_dir)
    sp = splits.split(ds.clips, ds.labels, seed=0)
    assert loeo.held_out_engines(ds, sp.indices["train"], sp.indices["test"]) == []


def test_evaluate_recomputes_the_same_figures_from_the_bundles_recipe(loeo_run, engines_data, capsys):
    record, _, tmp = loeo_run
    capsys.readouterr()
    assert main(["model", "evaluate", record["artifacts"]["bundle"], str(engines_data), "--out", str(tmp / "eval"),
                 "--leave-one-engine-out", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["leave_one_engine_out"] == record["metrics"]["leave_one_engine_out"]
    written = json.loads(open(report["files"]["report"]).read())
    assert written["leave_one_engine_out"]["engines"].keys() == set(engines.ENGINES)
    assert {r["value"] for r in report["slices"] if r["tag"] == "engine"} == set(engines.ENGINES)
