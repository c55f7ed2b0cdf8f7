"""`harken samples` through the real command (click's runner on the ``harken`` root): list, show,
play, label with history and conflicts, and an export that reads back with its labels and hashes."""
from __future__ import annotations

import hashlib
import json

import pytest
from click.testing import CliRunner

from cloud.samples import control
from cloud.samples.export import read_export
from shared.audio import read_wav
from shared.cli import main, root
from tests.cloud.samples_world import build


@pytest.fixture
def world(tmp_path):
    w = build(tmp_path / "world")
    yield w
    w.store.close()


def _argv(world, args) -> list[str]:
    return ["samples", *args, "--db", f"sqlite:///{world.path / 'harken.db'}", "--samples-dir", str(world.files.root)]


def harken(world, *args: str):
    result = CliRunner().invoke(root, _argv(world, args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def fails(world, capsys, *args: str) -> str:
    """Run as the `harken` script does: an error is one line on stderr and exit code 1."""
    capsys.readouterr()
    assert main(_argv(world, args)) == 1
    return capsys.readouterr().err


def test_list_show_and_play(world, tmp_path, capsys):
    listed = json.loads(harken(world, "list", "--json").output)
    assert [s["id"] for s in listed["samples"]] == world.ids[::-1] and listed["summary"]["total"] == 5
    text = harken(world, "list", "--reason", "alert").output
    assert "5 samples: 0 labelled, 5 unlabelled, 0 in conflict; showing 1" in text and world.ids[3] in text
    shown = json.loads(harken(world, "show", world.ids[1][:8], "--json").output)
    assert (shown["device"], shown["reason"], shown["predicted"], shown["file_ok"]) == \
        ("kitchen-1", "audit", "no", True)
    out = tmp_path / "one.wav"
    harken(world, "play", world.ids[1], "--out", str(out))
    assert hashlib.sha256(out.read_bytes()).hexdigest() == shown["sha256"] and len(read_wav(out)) > 4000
    assert "no sample 'abcdef0123'" in fails(world, capsys, "show", "abcdef0123")


def test_labels_record_who_and_conflicts_are_listed(world, capsys):
    first, second = world.ids[0], world.ids[2]
    harken(world, "label", first, "yes", "--by", "ana")
    out = harken(world, "label", first, "no", "--by", "ben").output
    assert "the labellers disagree: a conflict" in out
    harken(world, "label", second, "up", "--by", "ana")
    refused = fails(world, capsys, "label", second, "sideways", "--by", "ana")
    assert "not a label of model" in refused and "--new-label" in refused
    conflicts = json.loads(harken(world, "list", "--conflicts", "--json").output)["samples"]
    assert [s["id"] for s in conflicts] == [first]
    history = json.loads(harken(world, "show", first, "--json").output)["labels"]
    assert [(h["label"], h["by"]) for h in history] == [("yes", "ana"), ("no", "ben")]
    assert all(isinstance(h["t"], float) for h in history)


def test_an_export_reads_back_with_its_labels_and_hashes(world, tmp_path, capsys):
    labelled = {world.ids[0]: [("yes", "ana")], world.ids[1]: [("no", "ana")],
                world.ids[3]: [("down", "ana"), ("up", "ben")], world.ids[4]: [("yes", "ben")]}
    for sid, labels in labelled.items():
        for label, by in labels:
            harken(world, "label", sid, label, "--by", by)
    out = tmp_path / "export"
    report = json.loads(harken(world, "export", str(out), "--json").output)
    assert (report["exported"], report["by_label"], report["conflicts"]) == (4, {"no": 1, "up": 1, "yes": 2}, 1)
    entries = {e["id"]: e for e in read_export(out)}  # every file present, under its label, hashing to its sha256
    assert sorted(entries) == sorted(labelled)  # the unlabelled sample stays out
    for sid, e in entries.items():
        row = world.store.sample(sid)
        assert e["file"] == f"{row['label']}/{sid}.wav" and e["sha256"] == row["sha256"]
        assert (out / e["file"]).read_bytes() == world.files.read(row["sha256"])
        assert [(h["label"], h["by"]) for h in e["labels"]] == labelled[sid]
        assert e["labels"] == row["labels"] and e["conflict"] == row["conflict"]
        assert (e["device"], e["model"], e["reason"], e["captured_t"]) == \
            (row["device"], row["model"], row["reason"], row["captured_t"])
    assert sorted(p.name for p in out.iterdir()) == ["no", "samples.json", "up", "yes"]
    index = json.loads((out / "samples.json").read_text())
    assert (index["kind"], index["v"]) == ("harken.samples", "1.0")
    assert "not an empty folder" in fails(world, capsys, "export", str(out))  # never over an earlier export
    skipped = json.loads(harken(world, "export", str(tmp_path / "agreed"), "--skip-conflicts", "--json").output)
    assert skipped["exported"] == 3


def test_switches_and_requests_are_queued(world, capsys):
    harken(world, "disable", "kitchen-1", "hall-2")
    world.store.save_alert({"id": "al-1", "status": "open", "cohort": "fleet", "signal": "input", "pattern": "sudden",
                            "opened_t": world.now - 60, "evidence": {}})
    req = json.loads(harken(world, "request", "al-1", "--device", "porch-3", "--max-clips", "5", "--json").output)
    assert req["devices"] == ["porch-3"] and req["max_clips"] == 5
    queued = control.pending(world.store)
    assert [sorted(c["config"]) for c in queued] == [["hall-2", "kitchen-1"], ["porch-3"]]
    assert queued[0]["config"]["hall-2"] == {"samples": False}
    world.store.save_alert({"id": "al-2", "status": "resolved", "cohort": "fleet", "signal": "input",
                            "pattern": "sudden", "opened_t": world.now - 60, "evidence": {}})
    assert "is resolved" in fails(world, capsys, "request", "al-2")
