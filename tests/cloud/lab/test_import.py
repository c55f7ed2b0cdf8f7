"""`harken data import`, `merge` and `check` on real files: a speech-commands-like tree with
bad files in it, an export of labelled field samples with conflicting labels, and a merge
whose lineage keeps its parts."""
from __future__ import annotations

import hashlib
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from cloud.lab import augment, dataset, fieldsamples, importer, merge
from cloud.lab.engines import espeak
from shared.audio import read_wav
from shared.cli import main
from shared.errors import DatasetError


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(pcm, channels).tobytes())


def spoken(word: str, rate: int = 16000, seconds: float = 1.0, voice: str = "en-us+m3") -> np.ndarray:
    """espeak-ng saying ``word`` at ``rate``, in ``seconds`` of quiet room noise."""
    x, r = espeak.speak(word, voice, 160, 50)
    x = augment.set_peak(augment.change_rate(augment.trim(x), r, rate), -6)
    n = int(seconds * rate)
    room = augment.noise("pink", n, np.random.default_rng(len(word))) * 10 ** (-60 / 20)
    room[: min(n, len(x))] += x[:n]
    return room


@pytest.fixture(scope="module")
def commands_tree(tmp_path_factory) -> Path:
    """speech-commands layout: good files, one 44.1 kHz stereo, one corrupt, one at 4 kHz."""
    root = tmp_path_factory.mktemp("commands")
    write_wav(root / "yes" / "aa11_nohash_0.wav", spoken("yes"), 16000)
    write_wav(root / "yes" / "bb22_nohash_0.wav", spoken("yes", 44100, voice="en-gb+f2"), 44100, channels=2)
    write_wav(root / "yes" / "bb22_nohash_1.wav", spoken("yes", seconds=1.6, voice="en-gb+f2"), 16000)  # long
    write_wav(root / "no" / "aa11_nohash_1.wav", spoken("no", seconds=0.6), 16000)  # short
    write_wav(root / "no" / "cc33_nohash_0.wav", spoken("no", 4000), 4000)  # too low a rate
    (root / "no" / "dd44_nohash_0.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00garbage")  # corrupt
    write_wav(root / "cat" / "cc33_nohash_2.wav", spoken("cat"), 16000)
    write_wav(root / "_background_noise_" / "room.wav",
              augment.noise("pink", 56000, np.random.default_rng(0)) * 0.01, 16000)  # 3.5 s
    return root


def test_import_keeps_good_files_and_counts_the_bad(commands_tree, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["data", "import", str(commands_tree), "--out", str(out), "--source", "speech-commands",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rejected_by_code"] == {"not_a_usable_wav": 1, "sample_rate_too_low": 1}
    assert {r["file"] for r in report["rejected_files"]} == {"no/dd44_nohash_0.wav", "no/cc33_nohash_0.wav"}
    assert all("sox" in r["detail"] or "record again at 16 kHz" in r["detail"] for r in report["rejected_files"])
    assert (report["resampled"], report["padded"], report["trimmed"]) == (1, 1, 1)
    ds = dataset.load(out)
    assert ds.dataset_hash == report["dataset_hash"]
    assert sorted((c.label, c.speaker) for c in ds.clips if c.label != "_silence_") == [
        ("_unknown_", "speech-commands:cc33"), ("no", "speech-commands:aa11"), ("yes", "speech-commands:aa11"),
        ("yes", "speech-commands:bb22"), ("yes", "speech-commands:bb22")]
    assert sum(c.label == "_silence_" for c in ds.clips) == 3  # 3.5 s of background: three whole seconds
    unknown = next(c for c in ds.clips if c.label == "_unknown_")
    assert unknown.tags["word"] == "cat" and unknown.tags["source"] == "speech-commands"
    stereo = next(c for c in ds.clips if c.tags.get("original_rate") == 44100)
    assert stereo.tags["original_channels"] == 2
    for clip in ds.clips:
        with wave.open(str(ds.path_of(clip))) as w:
            assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (16000, 1, 16000)
        assert hashlib.sha256(ds.path_of(clip).read_bytes()).hexdigest() == clip.sha256
    padded = read_wav(ds.path_of(next(c for c in ds.clips if c.tags.get("padded_ms"))))
    assert 20 * np.log10(np.sqrt(np.mean(padded[-4000:] ** 2))) > -80  # room noise, not digital silence
    assert main(["data", "check", str(out)]) == 0  # what was imported is clean


def test_import_of_a_tree_without_any_usable_file_is_an_error(tmp_path):
    (tmp_path / "src" / "yes").mkdir(parents=True)
    (tmp_path / "src" / "yes" / "x.wav").write_bytes(b"not a wav")
    with pytest.raises(DatasetError, match="none of the 1 files"):
        importer.run(importer.ImportRequest(str(tmp_path / "src"), str(tmp_path / "out")))


def export_tree(root: Path, samples: list[tuple[str, str, str, list]]) -> Path:
    """An export of labelled field samples: (file, id, device, label history)."""
    for i, (file, _, _, _) in enumerate(samples):
        write_wav(root / file, spoken(Path(file).parent.name if Path(file).parent.name in ("yes", "no", "up")
                                      else "go", voice=("en-us+m3", "en-gb+f2")[i % 2]), 16000)
    entries = [{"file": f, "id": sid, "device": dev, "captured_by": "unknown field, ignored",
                "labels": [{"label": lab, "labeller": who, "t": t} for lab, who, t in hist]}
               for f, sid, dev, hist in samples]
    (root / fieldsamples.FILENAME).write_text(json.dumps({"kind": "harken.samples", "v": "1.3", "samples": entries}))
    return root


EXPORT = [
    ("yes/s1.wav", "s1", "kitchen", [("yes", "ana", "2026-12-01T10:00:00Z")]),
    ("no/s2.wav", "s2", "kitchen", [("yes", "ana", "2026-12-01T10:00:00Z"), ("no", "ben", "2026-12-01T11:00:00Z")]),
    ("yes/s3.wav", "s3", "hall", [("no", "ana", "2026-12-01T10:00:00Z"), ("yes", "ana", "2026-12-01T10:05:00Z")]),
    ("up/s4.wav", "s4", "hall", [("up", "ana", "2026-12-01T10:00:00Z"), ("down", "ana", "2026-12-01T12:00:00Z")]),
]


def test_an_export_with_conflicting_labels_shows_in_data_check(tmp_path, capsys):
    src = export_tree(tmp_path / "export", EXPORT)
    out = tmp_path / "ds"
    assert main(["data", "import", str(src), "--out", str(out), "--source", "field"]) == 0
    ds = dataset.load(out)
    assert {c.speaker for c in ds.clips} == {"field:kitchen", "field:hall"}
    assert ds.lineage["kind"] == "import" and ds.lineage["sample_ids"] == ["s1", "s2", "s3", "s4"]
    capsys.readouterr()
    assert main(["data", "check", str(out), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    conflicts = {Path(e["path"]).name: e["detail"] for e in report["errors"] if e["code"] == "label_conflict"}
    assert set(conflicts) == {"no_s2.wav", "up_s4.wav"}  # s3 is ana correcting herself: not a conflict
    assert "ana says 'yes'" in conflicts["no_s2.wav"] and "ben says 'no'" in conflicts["no_s2.wav"]
    assert "filed under 'up' but last labelled 'down'" in conflicts["up_s4.wav"]
    assert report["field_samples"] == 4


def test_merge_keeps_hashes_lineage_and_sample_ids(tiny_lab, tmp_path, capsys):
    src = export_tree(tmp_path / "export", EXPORT[:1] + EXPORT[2:3])
    field = tmp_path / "field"
    importer.run(importer.ImportRequest(str(src), str(field), source="field"))
    out = tmp_path / "merged"
    assert main(["data", "merge", str(tiny_lab.data_dir), str(field), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    a, b, m = dataset.load(tiny_lab.data_dir), dataset.load(field), dataset.load(out)
    assert len(m.clips) == len(a.clips) + len(b.clips) and summary["duplicates_dropped"] == 0
    assert m.dataset_hash == summary["dataset_hash"] == dataset.dataset_hash(a.raw["clips"] + b.raw["clips"])
    parts = m.lineage["parts"]
    assert [p["dataset_hash"] for p in parts] == [a.dataset_hash, b.dataset_hash]
    assert [p["path"] for p in parts] == [str(tiny_lab.data_dir.resolve()), str(field.resolve())]
    assert parts[1]["lineage"]["kind"] == "import" and m.lineage["sample_ids"] == ["s1", "s3"]
    assert main(["data", "check", str(out)]) == 0  # every copied file still matches its hash
    again = tmp_path / "twice"
    _, twice = merge.merge([field, field], again)
    assert twice["duplicates_dropped"] == len(b.clips) and twice["clips"] == len(b.clips)


def test_merge_refuses_a_part_whose_clip_changed(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    importer.run(importer.ImportRequest(str(export_tree(tmp_path / "e1", EXPORT[:1])), str(one), source="field"))
    importer.run(importer.ImportRequest(str(export_tree(tmp_path / "e2", EXPORT[1:2])), str(two), source="field"))
    clip = dataset.load(two).clips[0]
    path = two / clip.path
    path.write_bytes(path.read_bytes()[:-2] + b"\x01\x02")
    with pytest.raises(DatasetError, match="changed since its manifest"):
        merge.merge([one, two], tmp_path / "m")
    assert not (tmp_path / "m" / "manifest.json").exists()


def test_the_same_sample_under_two_labels_in_a_merge_is_a_conflict(tmp_path, capsys):
    first = export_tree(tmp_path / "e1", [("yes/x.wav", "s9", "hall", [("yes", "ana", "2026-12-01T10:00:00Z")])])
    second = export_tree(tmp_path / "e2", [("no/x.wav", "s9", "hall", [("no", "ben", "2026-12-02T10:00:00Z")])])
    for k, src in enumerate((first, second)):
        importer.run(importer.ImportRequest(str(src), str(tmp_path / f"d{k}"), source="field"))
    merge.merge([tmp_path / "d0", tmp_path / "d1"], tmp_path / "m")
    assert main(["data", "check", str(tmp_path / "m"), "--json"]) == 1
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert any(e["code"] == "label_conflict" and "sample s9 is filed under ['no', 'yes']" in e["detail"]
               for e in errors)


def test_samples_json_of_an_unknown_major_version_is_refused(tmp_path):
    (tmp_path / fieldsamples.FILENAME).write_text(json.dumps({"kind": "harken.samples", "v": "2.0", "samples": []}))
    with pytest.raises(DatasetError, match="version '2.0'"):
        fieldsamples.load(tmp_path)
