"""Checks that stored rollups are the exact merge of the windows they cover (replica tests)."""
from __future__ import annotations

import json
import math

from cloud.store import FLEET
from shared.window import merge_windows


def _strip(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("kind", "v")}


def expected_buckets(store, bucket_s: int) -> dict[tuple, dict]:
    """Every bucket (per device and fleet-wide) as the merge of the stored windows it covers."""
    groups: dict[tuple, list[dict]] = {}
    for row in store.window_rows():
        start = float(math.floor(row["t_start"] / bucket_s) * bucket_s)
        for device in (row["device"], FLEET):
            groups.setdefault((device, row["model"] or "", row["shadow_model"] or "", start), []).append(row["body"])
    return {k: _strip(merge_windows(ws)) for k, ws in groups.items()}


def stored_buckets(store) -> dict[tuple, tuple[int, dict]]:
    with store.transaction(write=False) as cur:
        rows = cur.execute("SELECT device, model, shadow_model, bucket_start, n_windows, body FROM rollups").fetchall()
    return {(d, m, sh, b): (n, _strip(json.loads(body))) for d, m, sh, b, n, body in rows}


def same(a, b, path: str = "") -> str | None:
    """Where ``a`` and ``b`` differ, or None: counts exactly, floats to rounding (sums of real
    agents' CPU seconds depend on the order of addition)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(a.keys() ^ b.keys())}"
        return next((d for k in a if (d := same(a[k], b[k], f"{path}.{k}"))), None)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} != {len(b)} items"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := same(x, y, f"{path}[{i}]"))), None)
    if isinstance(a, float) or isinstance(b, float):
        return None if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) else f"{path}: {a} != {b}"
    return None if a == b else f"{path}: {a!r} != {b!r}"


def assert_exact(store, bucket_s: int) -> int:
    """Every stored bucket holds exactly its windows and every window is in its buckets; returns
    the number of buckets."""
    expected, stored = expected_buckets(store, bucket_s), stored_buckets(store)
    assert sorted(stored) == sorted(expected)
    for key, body in expected.items():
        assert stored[key][0] == body["n_windows"], f"bucket {key}: {stored[key][0]} windows, not {body['n_windows']}"
        diff = same(stored[key][1], body)
        assert diff is None, f"bucket {key} is not the exact merge of its windows: {diff}"
    return len(expected)
