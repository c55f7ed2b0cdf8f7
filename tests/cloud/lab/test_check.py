"""Data check: planted problems are found and named; a clean dataset passes."""
from __future__ import annotations

import hashlib
import json
import shutil
import wave

import numpy as np
import pytest

from cloud.lab import check, dataset
from shared.audio import write_wav
from shared.cli import main


@pytest.fixture
def planted(tiny_lab, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_lab.data_dir, root)
    raw = json.loads((root / "manifest.json").read_text())
    yes = next(c for c in raw["clips"] if c["label"] == "yes")
    (root / "bad").mkdir()

    def add(name, label, data):
        (root / "bad" / name).write_bytes(data)
        raw["clips"].append({"path": f"bad/{name}", "label": label, "speaker": "en-us+m3",
                             "sha256": hashlib.sha256(data).hexdigest(), "tags": {}})

    add("dup_as_no.wav", "no", (root / yes["path"]).read_bytes())
    write_wav(root / "bad" / "tmp.wav", np.zeros(16000, np.float32))
    add("silent_yes.wav", "yes", (root / "bad" / "tmp.wav").read_bytes())
    with wave.open(str(root / "bad" / "tmp.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(44100)
        w.writeframes((np.sin(np.arange(44100) * 0.05) * 8000).astype("<i2").tobytes())
    add("cd_rate.wav", "go", (root / "bad" / "tmp.wav").read_bytes())
    add("garbage.wav", "up", b"this is not audio at all" * 10)
    (root / "bad" / "tmp.wav").unlink()
    (root / "manifest.json").write_text(json.dumps(raw))
    return root, yes["path"]


def _codes(report):
    return {(e["code"], e["path"]) for e in report["errors"]}


def test_clean_dataset_has_no_errors(tiny_lab):
    report = check.check(dataset.load(tiny_lab.data_dir))
    assert report["ok"] and report["errors"] == []
    assert sum(report["labels"].values()) == report["clips"] == 78


def test_planted_problems_are_each_reported(planted):
    root, yes_path = planted
    report = check.check(dataset.load(root))
    codes = _codes(report)
    assert not report["ok"]
    assert ("near_silent", "bad/silent_yes.wav") in codes
    assert ("wrong_sample_rate", "bad/cd_rate.wav") in codes
    assert ("unreadable", "bad/garbage.wav") in codes
    conflict = [e for e in report["errors"] if e["code"] == "conflicting_labels"]
    assert len(conflict) == 1 and "bad/dup_as_no.wav" in conflict[0]["detail"] and yes_path in conflict[0]["detail"]
    assert len(report["errors"]) == 4  # nothing else in the real clips is flagged


def test_edited_clip_is_a_hash_mismatch(tiny_lab, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_lab.data_dir, root)
    clip = dataset.load(root).clips[3]
    data = bytearray((root / clip.path).read_bytes())
    data[-2:] = b"\x10\x10"
    (root / clip.path).write_bytes(bytes(data))
    assert ("hash_mismatch", clip.path) in _codes(check.check(dataset.load(root)))


def test_cli_exits_1_on_errors_and_0_when_clean(planted, tiny_lab, capsys):
    root, _ = planted
    assert main(["data", "check", str(root), "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["ok"] is False and "4 error(s)" in err
    assert main(["data", "check", str(tiny_lab.data_dir)]) == 0
    assert "0 error(s)" in capsys.readouterr().out
