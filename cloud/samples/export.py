"""An export of labelled field samples: a folder per label of WAV files, plus ``samples.json``.

    DIR/<label>/<sample id>.wav     the file exactly as the device sent it (its sha256 is its name
                                    in the store); <label> is the sample's latest label
    DIR/samples.json                {"kind": "harken.samples", "v": "1.0", "samples": [entry, ...]}

One entry per file, sorted by ``file``: ``file`` (path under DIR), ``id``, ``sha256``, ``device``,
``model``, ``captured_t`` (the device's clock) and ``received_t`` (the collector's), ``reason``,
``alert``, ``predicted`` and ``confidence`` (what the model said), ``label`` (the folder),
``conflict`` (the labellers disagree) and ``labels``: the history, oldest first,
``[{"label", "by", "t"}]`` with ``t`` in UNIX seconds. Readers ignore fields they do not know;
a minor version may add some. ``harken data import DIR`` reads this layout (the label-conflict
check reads ``labels``); ``read_export`` reads it back and checks every file's hash.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cloud.samples.files import SampleFiles
from shared.errors import ConfigError
from shared.files import atomic_write

KIND = "harken.samples"
VERSION = "1.0"
INDEX = "samples.json"
PAGE = 100_000
FIELDS = ("id", "sha256", "device", "model", "captured_t", "received_t", "reason", "alert", "predicted",
          "confidence", "label", "conflict")


def export_samples(store, files: SampleFiles, out: str | Path, *, model: str | None = None,
                   device: str | None = None, skip_conflicts: bool = False) -> dict:
    """Write the labelled samples (filtered) to ``out``, which must not exist or be empty."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder; export into a new one")
    found = store.samples(model=model, device=device, labelled=True, limit=PAGE + 1, oldest_first=True)
    if len(found) > PAGE:
        raise ConfigError(f"more than {PAGE} labelled samples match: export them in parts, by --model or --device")
    rows = [s for s in found if not (skip_conflicts and s["conflict"])]
    histories = store.sample_label_histories([s["sha256"] for s in rows])
    entries, missing = [], []
    for s in rows:
        if not files.verify(s["sha256"]):
            missing.append(s["id"])
            continue
        rel = f"{s['label']}/{s['id']}.wav"
        atomic_write(out / rel, files.read(s["sha256"]))
        entries.append({"file": rel, **{k: s[k] for k in FIELDS}, "labels": histories[s["sha256"]]})
    entries.sort(key=lambda e: e["file"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / INDEX, (json.dumps({"kind": KIND, "v": VERSION, "samples": entries}, indent=1,
                                          sort_keys=True) + "\n").encode())
    by_label: dict[str, int] = {}
    for e in entries:
        by_label[e["label"]] = by_label.get(e["label"], 0) + 1
    return {"dir": str(out), "exported": len(entries), "by_label": dict(sorted(by_label.items())),
            "conflicts": sum(1 for e in entries if e["conflict"]), "missing_files": missing}


def read_export(root: str | Path) -> list[dict]:
    """The entries of an export, each checked: its file exists under its label and hashes to ``sha256``."""
    root = Path(root)
    try:
        doc = json.loads((root / INDEX).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{root / INDEX} cannot be read ({exc}); is {root} an export of `harken samples`?") from exc
    if doc.get("kind") != KIND or str(doc.get("v", "")).split(".")[0] != VERSION.split(".")[0]:
        raise ConfigError(f"{root / INDEX} is not a {KIND} {VERSION.split('.')[0]}.x index")
    for e in doc["samples"]:
        path = root / e["file"]
        if path.parent.name != e["label"] or not path.is_file():
            raise ConfigError(f"{e['file']}: missing, or not in the folder of its label {e['label']!r}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != e["sha256"]:
            raise ConfigError(f"{e['file']} does not hash to its sha256 {e['sha256'][:16]}: the export is damaged")
    return doc["samples"]
