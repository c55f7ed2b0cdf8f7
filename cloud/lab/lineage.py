"""Dataset lineage: what a dataset was made from, what a model learned from, and the walk
back from a model to its datasets, their parts and the field samples in them.

A dataset manifest's ``lineage`` is ``{"kind": "synth"}``, ``{"kind": "import", "source_dir",
"source", "sample_ids"}`` or ``{"kind": "merge", "parts": [{"dataset_hash", "path",
"clips", "lineage"}], "sample_ids"}`` (parts nest). A training run copies the tree into the
run record and the bundle's lineage (``dataset``), with the field-sample ids of each split
(``sample_ids``), so the walk needs neither the dataset directories nor the registry's
database — only the bundle.
"""
from __future__ import annotations

import logging
from typing import Iterable

log = logging.getLogger(__name__)

MAX_IDS_SHOWN = 10


def sample_ids(records: Iterable) -> list[str]:
    """Sorted ids of the field samples among clip records (dicts) or ``Clip`` objects."""
    ids = set()
    for r in records:
        sample = r.get("sample") if isinstance(r, dict) else getattr(r, "sample", None)
        if sample and sample.get("id"):
            ids.add(str(sample["id"]))
    return sorted(ids)


def part_entry(dataset) -> dict:
    """How a merged dataset names one of its parts."""
    return {"dataset_hash": dataset.dataset_hash, "path": str(dataset.root.resolve()),
            "clips": len(dataset.clips), "lineage": dataset.lineage}


def of_training(dataset, split) -> dict:
    """What a training run records: the dataset (hash, path, lineage tree) and sample ids by split."""
    return {"dataset": part_entry(dataset),
            "sample_ids": {name: sample_ids(dataset.clips[i] for i in idx) for name, idx in split.indices.items()}}


def walk(lineage: dict) -> list[str]:
    """Lines that walk a bundle's lineage back to datasets, parts and field samples."""
    lines = [f"run {lineage.get('run_id') or '-'}, code {lineage.get('code_revision') or '-'}, "
             f"seed {lineage.get('seed')}"]
    dataset = lineage.get("dataset")
    if not dataset:  # a bundle from before datasets were recorded: the hash and path only
        lines.append(f"dataset {lineage.get('dataset_hash') or '-'}  {lineage.get('dataset_path') or ''}".rstrip())
        return lines
    lines += _dataset_lines(dataset, depth=0)
    ids = lineage.get("sample_ids") or {}
    total = sorted({i for v in ids.values() for i in v})
    lines.append(f"field samples: {len(total)}" + ("" if not total else " (" + ", ".join(
        f"{k} {len(v)}" for k, v in ids.items()) + ")"))
    for name, values in ids.items():
        if values:
            shown = ", ".join(values[:MAX_IDS_SHOWN]) + (f", ... (+{len(values) - MAX_IDS_SHOWN})"
                                                         if len(values) > MAX_IDS_SHOWN else "")
            lines.append(f"  {name}: {shown}")
    return lines


def _dataset_lines(entry: dict, depth: int) -> list[str]:
    pad = "  " * depth
    lin = entry.get("lineage") or {}
    kind = lin.get("kind", "synth")
    detail = {"import": f"import of {lin.get('source_dir')} (source {lin.get('source')}, "
                        f"{len(lin.get('sample_ids') or [])} field samples)",
              "merge": f"merge of {len(lin.get('parts') or [])} parts"}.get(kind, kind)
    lines = [f"{pad}dataset {entry.get('dataset_hash')}  {entry.get('clips', '?')} clips  {detail}",
             f"{pad}  at {entry.get('path')}"]
    for part in lin.get("parts") or []:
        lines += _dataset_lines(part, depth + 1)
    return lines
