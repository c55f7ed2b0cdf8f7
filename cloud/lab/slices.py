"""Error analysis by tag: where do the errors come from, and which fix pays most?

For every tag value (``noise=babble``, ``snr_db=5``, ``accent=en-029`` ...) the table answers
the three questions of error analysis:

- ``error_share``: what fraction of all errors carries this tag?
- ``error_rate``: of the clips with this tag, what fraction is wrong?
- ``data_share``: what fraction of all clips carries this tag?

and ranks them by ``priority = max(0, error_rate - target_error) * data_share``: the room for
improvement on that slice times how often it occurs (with ``target_error`` = 0 this is the
share of all clips that are errors on this slice — the accuracy gained by fixing it fully).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

# Tags with one value per clip (or that merely restate the label) make no useful slice.
SKIPPED_TAGS = frozenset({"offset_ms", "word"})


def slice_table(tags: Sequence[Mapping], correct: Sequence[bool], target_error: float = 0.0,
                min_count: int = 1, skip: frozenset = SKIPPED_TAGS) -> list[dict]:
    """One row per (tag, value) seen on at least ``min_count`` clips, sorted by priority."""
    correct = np.asarray(correct, dtype=bool)
    n, n_err = len(correct), int(np.sum(~correct))
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, t in enumerate(tags):
        for key, value in t.items():
            if key in skip or value is None:
                continue
            groups[(key, str(value))].append(i)
    rows = []
    for (key, value), idx in groups.items():
        if len(idx) < min_count:
            continue
        errors = int(np.sum(~correct[idx]))
        error_rate = errors / len(idx)
        data_share = len(idx) / n if n else 0.0
        rows.append({
            "tag": key, "value": value, "count": len(idx), "errors": errors,
            "error_share": errors / n_err if n_err else 0.0,
            "error_rate": error_rate, "data_share": data_share,
            "priority": max(0.0, error_rate - target_error) * data_share,
        })
    rows.sort(key=lambda r: (-r["priority"], -r["count"], r["tag"], r["value"]))
    return rows


def table_text(rows: Sequence[Mapping], limit: int = 20) -> str:
    """The slice table as aligned text (top ``limit`` rows)."""
    head = f"{'tag':<14}{'value':<22}{'count':>7}{'errors':>8}{'err share':>11}{'err rate':>10}" \
           f"{'data share':>12}{'priority':>10}"
    lines = [head]
    for r in list(rows)[:limit]:
        lines.append(f"{r['tag'][:13]:<14}{r['value'][:21]:<22}{r['count']:>7}{r['errors']:>8}"
                     f"{r['error_share']:>11.1%}{r['error_rate']:>10.1%}{r['data_share']:>12.1%}"
                     f"{r['priority']:>10.4f}")
    return "\n".join(lines)
