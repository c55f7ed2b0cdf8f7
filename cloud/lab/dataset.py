"""A dataset directory: ``manifest.json`` plus WAV clips, and the hash that names it.

The dataset hash is the sha256 over the sorted ``"{clip sha256} {label}"`` lines, so it
changes when any clip's audio or label changes and not when files are renamed or reordered.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import wave
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shared.audio import SAMPLE_RATE, to_int16
from shared.errors import DatasetError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
KIND = "harken.dataset"
SCHEMA_VERSION = 1
GENERATOR = "harken-lab-synth"
GENERATOR_VERSION = "2"


@dataclass(frozen=True)
class Clip:
    path: str
    label: str
    speaker: str
    sha256: str
    tags: dict = field(default_factory=dict, hash=False, compare=False)
    # an imported field sample: {"id", "device", "labels": [{"label", "labeller", "t"}, ...]}
    sample: dict | None = field(default=None, hash=False, compare=False)


@dataclass(frozen=True)
class Dataset:
    root: Path
    labels: list[str]
    clips: list[Clip]
    seed: int
    dataset_hash: str
    placement: str
    raw: dict

    def path_of(self, clip: Clip) -> Path:
        return self.root / clip.path

    @property
    def lineage(self) -> dict:
        """Where the clips came from: ``{"kind": "synth" | "import" | "merge", ...}`` (a merge
        lists its parts' hashes, paths and lineages; see ``cloud.lab.lineage``)."""
        return self.raw.get("lineage") or {"kind": "synth"}


def wav_bytes(samples: np.ndarray) -> bytes:
    """A clip as 16 kHz mono 16-bit WAV bytes (clips are written without an fsync each: the
    manifest, written last and atomically, commits a dataset)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(to_int16(np.asarray(samples, dtype=np.float32)).astype("<i2").tobytes())
    return buf.getvalue()


def dataset_hash(records) -> str:
    lines = sorted(f"{r['sha256']} {r['label']}" for r in records)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def write_manifest(root: Path, records: list[dict], labels: list[str], seed: int,
                   params: dict, placement: str = "centre", lineage: dict | None = None) -> dict:
    """Write ``manifest.json`` atomically and return it."""
    records = sorted(records, key=lambda r: r["path"])
    manifest = {
        "kind": KIND, "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed, "sample_rate": 16000, "clip_samples": 16000, "placement": placement,
        "labels": labels, "dataset_hash": dataset_hash(records), "params": params,
        "lineage": lineage or {"kind": "synth"}, "clips": records,
    }
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".manifest-", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(manifest, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / MANIFEST)
    return manifest


def load(root: str | os.PathLike) -> Dataset:
    """Read a dataset directory; raise ``DatasetError`` saying how to fix what is wrong."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{path} not found; create a dataset with `harken data synth {root}`")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); re-create it with `harken data synth`") from exc
    if raw.get("kind") != KIND or raw.get("schema_version") != SCHEMA_VERSION:
        raise DatasetError(f"{path} is not a harken dataset manifest (schema {SCHEMA_VERSION})")
    try:
        clips = [Clip(c["path"], c["label"], c["speaker"], c["sha256"], c.get("tags", {}), c.get("sample"))
                 for c in raw["clips"]]
        labels = list(raw["labels"])
    except (KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: clip record missing field {exc}; each clip needs "
                           "path, label, speaker, sha256") from exc
    unknown = sorted({c.label for c in clips} - set(labels))
    if unknown:
        raise DatasetError(f"{path}: clips use labels {unknown} not listed in 'labels'")
    # Recomputed from the clip records, so an edited manifest cannot keep a stale hash.
    return Dataset(root, labels, clips, int(raw.get("seed", 0)), dataset_hash(raw["clips"]),
                   raw.get("placement", "centre"), raw)
