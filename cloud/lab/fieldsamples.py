"""``samples.json``: what an export of labelled field samples says about its files.

An export is a folder-per-label tree (``<label>/<file>.wav``, the label a person gave) plus
an optional ``samples.json`` at its root::

    {"kind": "harken.samples", "v": "1.0",
     "samples": [
       {"file": "yes/3f9a0c.wav",            # path under the export root (required)
        "id": "3f9a0c...",                   # sample id (the collector's; "sample_id" also read)
        "device": "kitchen-1",               # device that captured it
        "labels": [                          # label history, oldest first
          {"label": "yes", "labeller": "ana", "t": "2026-12-01T10:00:00Z"},
          {"label": "no", "labeller": "ben", "t": "2026-12-01T11:00:00Z"}]}]}

Unknown fields are ignored; a minor version bump may add some. ``"label"`` alone stands for a
history of one. The history travels into the dataset (each clip's ``sample``), so a
conflict stays visible after import and merge: ``harken data check`` reports a sample whose
labellers disagree (their latest labels differ), whose latest label is not the one it is
filed under, or whose id appears under two labels. A labeller who changes their own mind
is a correction, not a conflict.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path, PurePosixPath

from shared.errors import DatasetError

log = logging.getLogger(__name__)

FILENAME = "samples.json"
KIND = "harken.samples"
MAJOR = 1


def load(root: Path) -> dict[str, dict]:
    """``{file path under root (posix): sample}`` from ``root/samples.json`` ({} if absent)."""
    path = Path(root) / FILENAME
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); fix it or remove it to import without "
                           "sample metadata") from exc
    entries = raw.get("samples") if isinstance(raw, dict) else raw
    if isinstance(raw, dict):
        _check_version(raw, path)
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: expected a 'samples' list (see `harken data import --help`)")
    out: dict[str, dict] = {}
    for n, entry in enumerate(entries):
        sample = normalise(entry, f"{path} entry {n}")
        out[str(PurePosixPath(sample.pop("file")))] = sample
    return out


def _check_version(raw: dict, path: Path) -> None:
    if raw.get("kind", KIND) != KIND:
        raise DatasetError(f"{path}: kind {raw.get('kind')!r} is not {KIND!r}")
    major = str(raw.get("v", f"{MAJOR}.0")).split(".", 1)[0]
    if major != str(MAJOR):
        raise DatasetError(f"{path}: samples.json version {raw.get('v')!r} is not {MAJOR}.x; "
                           "export it again with this version of harken")


def normalise(entry, where: str) -> dict:
    """``{"file", "id", "device", "labels": [{"label", "labeller", "t"}]}`` from one entry."""
    if not isinstance(entry, dict) or not isinstance(entry.get("file", entry.get("path")), str):
        raise DatasetError(f"{where}: each sample needs a 'file' (its path under the export root)")
    history = entry.get("labels")
    if history is None and entry.get("label") is not None:
        history = [{"label": entry["label"]}]
    if not isinstance(history or [], list):
        raise DatasetError(f"{where}: 'labels' must be a list of {{label, labeller, t}}")
    labels = []
    for item in history or []:
        if not isinstance(item, dict) or not isinstance(item.get("label"), str):
            raise DatasetError(f"{where}: every label entry needs a 'label' string")
        labels.append({"label": item["label"], "labeller": item.get("labeller", item.get("by")),
                       "t": item.get("t", item.get("at"))})
    sample_id = entry.get("id", entry.get("sample_id"))
    return {"file": entry.get("file", entry.get("path")), "id": None if sample_id is None else str(sample_id),
            "device": entry.get("device"), "labels": labels}


def latest(history: list[dict]) -> dict | None:
    """The last label given (by time when every entry has one, else by position)."""
    if not history:
        return None
    if all(h.get("t") for h in history):
        return max(enumerate(history), key=lambda kv: (str(kv[1]["t"]), kv[0]))[1]
    return history[-1]


def conflicts(sample: dict, filed_as: str) -> list[str]:
    """Why this sample's labels disagree (empty: they do not)."""
    history = sample.get("labels") or []
    if not history:
        return []
    by_labeller: dict[str, list[dict]] = {}
    for h in history:
        by_labeller.setdefault(str(h.get("labeller")), []).append(h)
    finals = {who: latest(hs)["label"] for who, hs in by_labeller.items()}
    out = []
    if len(set(finals.values())) > 1:
        out.append("labellers disagree: " + ", ".join(f"{who} says {lab!r}" for who, lab in sorted(finals.items())))
    last = latest(history)["label"]
    if last != filed_as:
        out.append(f"filed under {filed_as!r} but last labelled {last!r}")
    return out
