"""``harken data import``: a folder-per-label tree of recordings into a dataset.

The layout is that of the public speech-commands sets and of an export of labelled field
samples (``fieldsamples.py`` documents its optional ``samples.json``)::

    DIR/<label>/*.wav              the label is the folder's name
    DIR/_background_noise_/*.wav   long background recordings, cut into 1 s _silence_ clips
    DIR/samples.json               optional: sample id, device and label history per file

Every file is decoded (PCM or float WAV, any channel count), mixed to mono, resampled to
16 kHz when it is not (rates below 8 kHz cannot hold speech and are refused), and made 1 s
long: a shorter clip is padded after its end with pink noise at the level of its own
quietest 30 ms (never digital silence, which the gate's VAD adapts to), seeded by the file's
hash; a longer one keeps its loudest second. A file that cannot be used is reported with its
reason and counted, and the others are kept.

Speakers: ``{source}:{device}`` for a field sample, ``{source}:{id}`` for a speech-commands
name ``<id>_nohash_<n>.wav``, else ``{source}:{label}/{file stem}`` (one speaker per file).
"""
from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cloud.lab import augment, fieldsamples, voices
from cloud.lab.dataset import wav_bytes, write_manifest
from shared.audio import SAMPLE_RATE, decode_wav_bytes, wav_format
from shared.errors import AudioError, DatasetError

log = logging.getLogger(__name__)

GENERATOR = "harken-lab-import"
GENERATOR_VERSION = "1"
BACKGROUND = "_background_noise_"
MIN_RATE = 8000
CLIP = SAMPLE_RATE
FRAME = 480  # 30 ms
MIN_PAD_DBFS = -75.0
NOHASH_RE = re.compile(r"^(?P<speaker>[^_]+)_nohash_\d+$")
LABEL_MODES = ("task", "folders")


class Rejected(Exception):
    """A file that cannot be imported: ``code`` (counted) and ``detail`` (how to fix it)."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail


@dataclass
class ImportReport:
    imported: int = 0
    resampled: int = 0
    padded: int = 0
    trimmed: int = 0
    rejected: list[dict] = field(default_factory=list)

    def reject(self, path: str, code: str, detail: str) -> None:
        self.rejected.append({"file": path, "code": code, "detail": detail})
        log.warning("import: skipping %s: %s (%s)", path, code, detail)

    def to_dict(self) -> dict:
        return {"imported": self.imported, "resampled": self.resampled, "padded": self.padded,
                "trimmed": self.trimmed, "rejected": len(self.rejected),
                "rejected_by_code": dict(Counter(r["code"] for r in self.rejected)),
                "rejected_files": self.rejected}


def label_for(folder: str, mode: str) -> str:
    """The dataset label of a folder: itself, or (``task``) ``_unknown_`` for other words."""
    if folder == BACKGROUND:
        return voices.SILENCE_LABEL
    if mode == "folders" or folder in voices.LABELS:
        return folder
    return voices.UNKNOWN_LABEL


def decode(data: bytes, name: str, report: ImportReport) -> tuple[np.ndarray, dict]:
    """Float32 mono 16 kHz samples and what they were; raises ``Rejected`` for bad files."""
    try:
        fmt = wav_format(data, name)
        if fmt["rate"] < MIN_RATE:
            raise Rejected("sample_rate_too_low", f"{name}: {fmt['rate']} Hz is below {MIN_RATE} Hz and "
                                                  "cannot hold speech; record again at 16 kHz")
        samples = decode_wav_bytes(data, name)  # mono, resampled to 16 kHz
    except AudioError as exc:
        raise Rejected("not_a_usable_wav", str(exc)) from exc
    if not np.all(np.isfinite(samples)):
        raise Rejected("not_finite", f"{name}: holds NaN or infinite samples; re-export it")
    if fmt["rate"] != SAMPLE_RATE:
        report.resampled += 1
    return samples, {"original_rate": fmt["rate"], "original_channels": fmt["channels"],
                     "original_ms": int(1000 * len(samples) / SAMPLE_RATE)}


def to_one_second(samples: np.ndarray, seed: bytes, report: ImportReport) -> tuple[np.ndarray, dict]:
    """Pad (room noise after the end) or trim (loudest second) to exactly 1 s."""
    n = len(samples)
    if n > CLIP:
        power = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
        energy = power[CLIP:] - power[:-CLIP]  # every 1 s window's energy (a moving sum in O(n))
        start = int(np.argmax(energy))
        report.trimmed += 1
        return samples[start: start + CLIP], {"trimmed_ms": int(1000 * (n - CLIP) / SAMPLE_RATE)}
    if n == CLIP:
        return samples, {}
    frames = samples[: n // FRAME * FRAME].reshape(-1, FRAME) if n >= FRAME else samples[None, :]
    quietest = float(np.sqrt(np.min(np.mean(frames.astype(np.float64) ** 2, axis=1))))
    level = max(quietest, 10 ** (MIN_PAD_DBFS / 20.0))
    rng = np.random.default_rng(np.frombuffer(seed[:16], dtype=np.uint32))
    pad = augment.noise("pink", CLIP - n, rng) * np.float32(level)
    report.padded += 1
    return np.concatenate([samples, pad]).astype(np.float32), {"padded_ms": int(1000 * (CLIP - n) / SAMPLE_RATE)}


def speaker_of(source: str, label_folder: str, stem: str, sample: dict | None) -> str:
    if sample and sample.get("device"):
        return f"{source}:{sample['device']}"
    m = NOHASH_RE.match(stem)
    if m:
        return f"{source}:{m.group('speaker')}"
    return f"{source}:{label_folder}/{stem}"


def _background_clips(samples: np.ndarray) -> list[np.ndarray]:
    """Whole seconds of a long background recording (a shorter one is dropped)."""
    return [samples[i: i + CLIP] for i in range(0, len(samples) - CLIP + 1, CLIP)]


def _files(src: Path) -> list[tuple[str, Path]]:
    out = []
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out += [(folder.name, f) for f in sorted(folder.iterdir()) if f.is_file() and f.suffix.lower() == ".wav"]
    return out


@dataclass(frozen=True)
class ImportRequest:
    source_dir: str
    out: str
    source: str = "import"  # speaker-name prefix: what splits stratify on
    label_mode: str = "task"  # task: the 12 task labels; folders: every folder its own label
    progress: Callable[[int], None] | None = None


def count_files(source_dir: str | Path) -> int:
    return len(_files(Path(source_dir)))


def run(req: ImportRequest) -> tuple[dict, ImportReport]:
    """Import ``req.source_dir`` into a dataset at ``req.out``; return (manifest, report)."""
    src, out = Path(req.source_dir), Path(req.out)
    if req.label_mode not in LABEL_MODES:
        raise DatasetError(f"label mode {req.label_mode!r}: use one of {', '.join(LABEL_MODES)}")
    if not src.is_dir():
        raise DatasetError(f"{src} is not a directory; give a folder with one sub-folder per label")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", req.source):
        raise DatasetError(f"source {req.source!r}: use letters, digits, _ . - (it prefixes speaker names)")
    samples = fieldsamples.load(src)
    files = _files(src)
    if not files:
        raise DatasetError(f"{src} holds no <label>/*.wav files; expected one folder per label")
    report, records = ImportReport(), []
    for folder, path in files:
        rel = path.relative_to(src).as_posix()
        records += _import_file(req, folder, path, rel, samples.get(rel), out, report)
        if req.progress:
            req.progress(1)
    if not records:
        raise DatasetError(f"none of the {len(files)} files in {src} could be imported: "
                           + "; ".join(f"{r['file']}: {r['detail']}" for r in report.rejected[:3]))
    report.imported = len(records)
    labels = _labels(records, req.label_mode)
    sample_ids = sorted({r["sample"]["id"] for r in records if r.get("sample") and r["sample"].get("id")})
    params = {"generator": GENERATOR, "generator_version": GENERATOR_VERSION, "source": req.source,
              "label_mode": req.label_mode, "report": report.to_dict()}
    lineage = {"kind": "import", "source_dir": str(src.resolve()), "source": req.source,
               "files": len(files), "sample_ids": sample_ids}
    manifest = write_manifest(out, records, labels, 0, params, lineage=lineage)
    log.info("imported %d clips from %s into %s (%d rejected)", len(records), src, out, len(report.rejected))
    return manifest, report


def _labels(records: list[dict], mode: str) -> list[str]:
    present = {r["label"] for r in records}
    if mode == "task":
        return list(voices.LABELS)
    return sorted(present)


def _import_file(req: ImportRequest, folder: str, path: Path, rel: str, sample: dict | None,
                 out: Path, report: ImportReport) -> list[dict]:
    try:
        data = path.read_bytes()
        samples, origin = decode(data, rel, report)
    except OSError as exc:
        report.reject(rel, "unreadable", f"{rel}: cannot read ({exc.strerror or exc}); check its permissions")
        return []
    except Rejected as exc:
        report.reject(rel, exc.code, exc.detail)
        return []
    label = label_for(folder, req.label_mode)
    digest = hashlib.sha256(data).digest()
    if folder == BACKGROUND:
        pieces = _background_clips(samples)
        if not pieces:
            report.reject(rel, "too_short", f"{rel}: a background recording shorter than 1 s gives no clip")
        shaped = [(p, {"background_offset_s": k}) for k, p in enumerate(pieces)]
    else:
        shaped = [to_one_second(samples, digest, report)]
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{folder}_{path.stem}")
    records = []
    for k, (clip, shaping) in enumerate(shaped):
        name = f"clips/{label}/{base}{'' if len(shaped) == 1 else f'_{k:04d}'}.wav"
        wav = wav_bytes(clip)
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(wav)
        tags = {"source": req.source, "engine": None, "voice": None, "word": folder if folder != BACKGROUND else None,
                **origin, **shaping}
        record = {"path": name, "label": label, "speaker": speaker_of(req.source, folder, path.stem, sample),
                  "sha256": hashlib.sha256(wav).hexdigest(), "tags": tags}
        if sample is not None:
            record["sample"] = sample
        records.append(record)
    return records
