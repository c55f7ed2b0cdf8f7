"""``harken data merge``: one new dataset version from several.

Clips are copied (hard-linked where the filesystem allows) under ``clips/<label>/p<k>-<name>``
after checking each file's sha256 against its part's manifest, so a merge never launders an
edited clip. A clip whose audio and label are already in an earlier part is kept once
(counted as a duplicate); the same audio under two labels is kept twice, and
``harken data check`` reports the conflict. The manifest's lineage names every part (hash,
path, lineage) and the union of their field-sample ids.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

from cloud.lab import dataset as ds_mod
from cloud.lab import lineage as lineage_mod
from shared.errors import DatasetError

log = logging.getLogger(__name__)

GENERATOR = "harken-lab-merge"


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed: copy
        shutil.copyfile(src, dst)


def _labels(parts: Sequence[ds_mod.Dataset]) -> list[str]:
    out: list[str] = []
    for part in parts:
        out += [label for label in part.labels if label not in out]
    return out


def merge(part_dirs: Sequence[str | os.PathLike], out: str | os.PathLike,
          progress: Callable[[int], None] | None = None) -> tuple[dict, dict]:
    """Merge the datasets in ``part_dirs`` into ``out``; return (manifest, summary)."""
    if len(part_dirs) < 2:
        raise DatasetError("give at least two datasets to merge")
    out = Path(out)
    if (out / ds_mod.MANIFEST).exists():
        raise DatasetError(f"{out} already holds a dataset; merge into a new directory")
    parts = [ds_mod.load(d) for d in part_dirs]
    placements = {p.placement for p in parts}
    if len(placements) > 1:
        raise DatasetError(f"the datasets place words differently ({sorted(placements)}); merge only "
                           "datasets made for the same placement rule")
    seen: set[tuple[str, str]] = set()
    records, duplicates = [], 0
    for k, part in enumerate(parts):
        for clip in part.clips:
            if (clip.sha256, clip.label) in seen:
                duplicates += 1
                continue
            seen.add((clip.sha256, clip.label))
            records.append(_copy(part, clip, k, out))
            if progress:
                progress(1)
    lineage = {"kind": "merge", "parts": [lineage_mod.part_entry(p) for p in parts],
               "sample_ids": lineage_mod.sample_ids(records)}
    params = {"generator": GENERATOR, "parts": len(parts), "duplicates_dropped": duplicates}
    manifest = ds_mod.write_manifest(out, records, _labels(parts), parts[0].seed, params,
                                     placement=placements.pop(), lineage=lineage)
    summary = {"clips": len(records), "duplicates_dropped": duplicates, "parts": len(parts),
               "dataset_hash": manifest["dataset_hash"]}
    log.info("merged %d datasets into %s: %d clips (%d duplicates dropped)", len(parts), out,
             len(records), duplicates)
    return manifest, summary


def _copy(part: ds_mod.Dataset, clip: ds_mod.Clip, k: int, out: Path) -> dict:
    src = part.path_of(clip)
    try:
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
    except OSError as exc:
        raise DatasetError(f"{src}: cannot read ({exc.strerror or exc}); run `harken data check {part.root}`") from exc
    if digest != clip.sha256:
        raise DatasetError(f"{src} changed since its manifest was written (sha256 differs); "
                           f"run `harken data check {part.root}` and fix that dataset first")
    rel = f"clips/{clip.label}/p{k}-{Path(clip.path).name}"
    _place(src, out / rel)
    record = {"path": rel, "label": clip.label, "speaker": clip.speaker, "sha256": clip.sha256,
              "tags": dict(clip.tags), "origin": part.dataset_hash}
    if clip.sample is not None:
        record["sample"] = clip.sample
    return record
