"""The lab's commands, run for real: data synth/split, model train/inspect/verify."""
from __future__ import annotations

import json
import zipfile

from click.testing import CliRunner

from cloud.cli.data import group as data_group
from cloud.cli.model import group as model_group
from shared import keys
from shared.bundle import load_bundle
from shared.cli import main


def test_data_synth_then_split_prints_side_by_side_distribution(tmp_path):
    out = tmp_path / "d"
    runner = CliRunner()
    res = runner.invoke(data_group, ["synth", str(out), "--per-word", "3", "--seed", "3", "--engines", "espeak-ng",
                                     "--accents", "en-us", "--variants", "m1,m3,f2"])
    assert res.exit_code == 0, res.output
    assert "39 clips, 3 speakers from espeak-ng" in res.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset_hash"] in res.stdout and manifest["seed"] == 3
    split = runner.invoke(data_group, ["split", str(out)])
    assert split.exit_code == 0
    lines = split.stdout.splitlines()
    assert lines[0].split() == ["label", "all", "train", "dev", "test"]
    assert any(line.startswith("_unknown_") for line in lines)
    assert "speakers: train 1, dev 1, test 1 (disjoint)" in split.stdout
    as_json = json.loads(runner.invoke(data_group, ["split", str(out), "--json"]).stdout)
    assert sum(as_json["split"]["sizes"].values()) == 39


def test_inspect_shows_identity_and_says_it_is_signed(tiny_lab):
    res = CliRunner().invoke(model_group, ["inspect", str(tiny_lab.bundle_path), "--json"])
    info = json.loads(res.stdout)
    assert info["signed"] is True and info["name"] == "tiny-kws" and len(info["labels"]) == 12
    assert info["model_sha256"] == tiny_lab.record["artifacts"]["model_sha256"]
    assert info["lineage"]["run_id"] == tiny_lab.record["id"]
    assert info["sizes"]["bundle_bytes"] == tiny_lab.bundle_path.stat().st_size
    text = CliRunner().invoke(model_group, ["inspect", str(tiny_lab.bundle_path)]).stdout
    assert "signed        yes" in text and info["model_sha256"] in text


def test_verify_accepts_the_signer_and_names_each_failure(tiny_lab, tmp_path, capsys):
    assert main(["model", "verify", str(tiny_lab.bundle_path), "--public-key", str(tiny_lab.public_key_path)]) == 0
    assert capsys.readouterr().out.startswith("OK tiny-kws")
    _, other = keys.generate_keypair(tmp_path / "other")
    assert main(["model", "verify", str(tiny_lab.bundle_path), "--public-key", str(other)]) == 1
    assert "signature does not verify" in capsys.readouterr().err
    tampered = tmp_path / "tampered.hkb"
    with zipfile.ZipFile(tiny_lab.bundle_path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "model.onnx":
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.writestr(info, data)
    assert main(["model", "verify", str(tampered), "--public-key", str(tiny_lab.public_key_path)]) == 1
    assert "does not match the manifest's sha256" in capsys.readouterr().err
    garbage = tmp_path / "garbage.hkb"
    garbage.write_bytes(b"not a bundle")
    assert main(["model", "verify", str(garbage), "--public-key", str(tiny_lab.public_key_path)]) == 1
    assert "not a Harken bundle" in capsys.readouterr().err


def test_train_command_writes_a_verified_bundle_and_records_the_run(tiny_lab, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARKEN_SIGNING_KEY", str(tmp_path / "absent.key"))
    out = tmp_path / "cli.hkb"
    assert main(["model", "train", str(tiny_lab.data_dir), "--out", str(out)]) == 1
    assert "harken keys generate" in capsys.readouterr().err and not out.exists()
    code = main(["model", "train", str(tiny_lab.data_dir), "--out", str(out), "--key", str(tiny_lab.private_key_path),
                 "--runs-dir", str(tmp_path / "runs"), "--seed", "1", "--version", "9.9.9", "--json"])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    b = load_bundle(out, [keys.load_public_key(tiny_lab.public_key_path)])
    assert b.manifest["version"] == "9.9.9" and b.manifest["lineage"]["seed"] == 1
    assert b.sha256 == record["artifacts"]["model_sha256"]
    assert main(["runs", "list", "--runs-dir", str(tmp_path / "runs"), "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [record["id"]]


def test_synth_takes_engines_and_shares_and_refuses_a_malformed_share(tmp_path):
    runner = CliRunner()
    out = tmp_path / "d"
    res = runner.invoke(data_group, ["synth", str(out), "--per-word", "1", "--engines", "festival,flite",
                                     "--shares", "festival=3,flite=1"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert {p["engine"]: p["share"] for p in manifest["params"]["engines"]} == {"festival": 0.75, "flite": 0.25}
    speech = [c for c in manifest["clips"] if c["label"] != "_silence_"]
    assert sum(c["tags"]["engine"] == "festival" for c in speech) == 3 * sum(c["tags"]["engine"] == "flite"
                                                                            for c in speech)
    bad = runner.invoke(data_group, ["synth", str(tmp_path / "e"), "--shares", "festival"])
    assert bad.exit_code == 2 and "ENGINE=SHARE" in bad.output
