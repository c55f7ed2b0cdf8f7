"""A model trained on a merged dataset records its dataset versions and field-sample ids, and
`harken model show` walks back from the model to the dataset, its parts and the samples."""
from __future__ import annotations

from cloud.lab import dataset, fixtures, importer, lineage, merge, pipeline
from shared import keys
from shared.bundle import load_bundle
from shared.cli import main

from tests.cloud.lab.test_import import EXPORT, export_tree


def test_model_show_walks_from_the_model_to_parts_and_samples(tiny_lab, tmp_path, capsys):
    field = tmp_path / "field"
    importer.run(importer.ImportRequest(str(export_tree(tmp_path / "export", EXPORT[:1] + EXPORT[2:3])), str(field),
                                        source="field"))
    merged = tmp_path / "merged"
    merge.merge([tiny_lab.data_dir, field], merged)
    bundle_path = tmp_path / "m.hkb"
    record = pipeline.run(pipeline.TrainRequest(
        data_dir=str(merged), out=str(bundle_path), private_key=keys.load_private_key(tiny_lab.private_key_path),
        name="lineage-kws", version="0.0.2", hyperparameters=fixtures.TINY_HYPERPARAMETERS,
        runs_dir=str(tmp_path / "runs")))
    bundle = load_bundle(bundle_path, [keys.load_public_key(tiny_lab.public_key_path)])
    lin = bundle.manifest["lineage"]
    m, a, b = dataset.load(merged), dataset.load(tiny_lab.data_dir), dataset.load(field)
    assert lin["dataset"]["dataset_hash"] == m.dataset_hash == record["dataset"]["dataset_hash"]
    assert [p["dataset_hash"] for p in lin["dataset"]["lineage"]["parts"]] == [a.dataset_hash, b.dataset_hash]
    by_split = lin["sample_ids"]
    assert by_split == record["sample_ids"]
    assert sorted(i for ids in by_split.values() for i in ids) == ["s1", "s3"]  # each in the split of its device

    db, reg = f"sqlite:///{tmp_path / 'reg.db'}", str(tmp_path / "registry")
    assert main(["model", "register", str(bundle_path), "--db", db, "--registry", reg,
                 "--public-key", str(tiny_lab.public_key_path)]) == 0
    capsys.readouterr()
    assert main(["model", "show", "lineage-kws:0.0.2", "--db", db, "--registry", reg]) == 0
    shown = capsys.readouterr().out
    for h in (m.dataset_hash, a.dataset_hash, b.dataset_hash):
        assert h in shown
    assert "merge of 2 parts" in shown and f"import of {(tmp_path / 'export').resolve()}" in shown
    assert "field samples: 2" in shown and "s1" in shown and "s3" in shown
    assert shown.index(m.dataset_hash) < shown.index(a.dataset_hash) < shown.index(b.dataset_hash)


def test_a_bundle_from_before_dataset_lineage_still_walks():
    lines = lineage.walk({"run_id": "r1", "dataset_hash": "abc", "dataset_path": "/data/x", "seed": 0})
    assert lines[0].startswith("run r1") and lines[1] == "dataset abc  /data/x"
