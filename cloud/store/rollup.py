"""Exact merging of stored windows into time buckets (pure: no database here).

A rollup body is ``shared.window.merge_windows`` of the windows of one bucket, so merging
rollups with each other or with more windows is exactly merging the original windows. A
window whose histograms disagree with its model's shape (a device bug) cannot be merged;
it is left out and reported, never allowed to break the merge of the others.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from shared.window import merge_windows


def bucket_start(t: float, bucket_s: int) -> float:
    return float(math.floor(t / bucket_s) * bucket_s)


def merge_checked(bodies: Iterable[tuple[object, dict]], base: dict | None = None) -> tuple[dict | None, list]:
    """Merge ``(key, body)`` pairs onto ``base``; returns (merge, keys of bodies that did not fit).

    The fast path merges everything at once; if that fails, bodies are added one by one so
    only the ones that disagree with the merge so far are left out.
    """
    items = list(bodies)
    start = [base] if base is not None else []
    try:
        return merge_windows(start + [b for _, b in items]), []
    except (ValueError, KeyError, TypeError):
        pass
    merged, bad = base, []
    for key, body in items:
        try:
            merged = merge_windows([merged, body]) if merged is not None else merge_windows([body])
        except (ValueError, KeyError, TypeError):
            bad.append(key)
    return merged, bad


@dataclass
class RollupPlan:
    """The partial merges of one chunk of windows, before they meet the stored buckets.

    ``partials`` maps (device, model, bucket_start) → (merge, window ids in it).
    """

    bucket_s: int
    partials: dict[tuple[str, str, float], tuple[dict, list[int]]] = field(default_factory=dict)
    bad: list[int] = field(default_factory=list)


def plan(rows: Iterable[tuple[int, str, str, float, dict]], bucket_s: int) -> RollupPlan:
    """Group ``(id, device, model, t_start, body)`` rows by device, model and bucket, and merge."""
    groups: dict[tuple[str, str, float], list[tuple[int, dict]]] = defaultdict(list)
    for wid, device, model, t_start, body in rows:
        groups[(device, model, bucket_start(t_start, bucket_s))].append((wid, body))
    out = RollupPlan(bucket_s)
    for key, items in groups.items():
        merged, bad = merge_checked(items)
        out.bad.extend(bad)
        left_out = set(bad)
        ids = [wid for wid, _ in items if wid not in left_out]
        if merged is not None and ids:
            out.partials[key] = (merged, ids)
    return out


def merge_by_model(bodies: Iterable[tuple[str, dict]]) -> dict[str, dict]:
    """``(model, body)`` pairs → one exact merge per model; bodies that do not fit are skipped."""
    by_model: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for i, (model, body) in enumerate(bodies):
        by_model[model].append((i, body))
    out = {}
    for model, items in by_model.items():
        merged, _ = merge_checked(items)
        if merged is not None:
            out[model] = merged
    return out


# -- the database side: one chunk of unrolled windows per transaction ------------------------
UNMERGEABLE = "unmergeable"
DELETE_CHUNK = 5000


class _Conflict(Exception):
    """Another collector rolled some of these windows up first: retry the chunk."""


def run(store, bucket_s: int, retention_full_s: float, *, now: float, chunk: int = 2000):
    """``Store.rollup`` for the SQL engines (``store`` is a ``SqlStore``).

    Windows are read and merged per (device, model, bucket) outside the write transaction;
    the transaction claims them (``rolled = 0 → 1``, or 2 if unmergeable), adds the merges
    to the stored device and fleet buckets, and fails over to a retry if another collector
    claimed any of them first. Then full windows older than the retention are deleted.
    """
    from cloud.store.base import RollupResult

    rolled = unmergeable = 0
    while True:
        with store._tx(write=False) as cur:
            rows = cur.execute("SELECT id, device, model, t_start, body FROM windows WHERE rolled = 0"
                               f" ORDER BY id LIMIT {int(chunk)}").fetchall()
        if not rows:
            break
        bodies = {r[0]: r[4] for r in rows}
        p = plan(((i, d, m, t, json.loads(b)) for i, d, m, t, b in rows), bucket_s)
        try:
            good, bad = _apply(store, p, bodies, now)
        except _Conflict:
            continue
        rolled += good
        unmergeable += bad
        if len(rows) < chunk:
            break
    deleted = _delete_old(store, now - retention_full_s)
    return RollupResult(rolled, deleted, unmergeable)


def _load_existing(cur, keys: Iterable[tuple[str, str, float]], bucket_s: int) -> dict:
    by_bucket: dict[float, set[str]] = defaultdict(set)
    for device, _, start in keys:
        by_bucket[start].add(device)
    out = {}
    for start, devices in by_bucket.items():
        devices = sorted(devices)
        for i in range(0, len(devices), 500):
            part = devices[i:i + 500]
            rows = cur.execute(
                f"SELECT device, model, body FROM rollups WHERE bucket_start = ? AND bucket_s = ?"
                f" AND device IN ({','.join('?' * len(part))})", [start, bucket_s, *part]).fetchall()
            for device, model, body in rows:
                out[(device, model, start)] = json.loads(body)
    return out


def _apply(store, p: RollupPlan, bodies: dict[int, str], now: float) -> tuple[int, int]:
    from cloud.store.base import FLEET, Reject
    from cloud.store.records import dumps

    with store._tx() as cur:
        fleet_keys = {(FLEET, m, b) for _, m, b in p.partials}
        existing = _load_existing(cur, list(p.partials) + sorted(fleet_keys), p.bucket_s)
        fleet = {k: existing.get(k) for k in fleet_keys}
        good_ids, bad_ids, upserts = [], list(p.bad), []
        for key in sorted(p.partials):
            partial, ids = p.partials[key]
            fk = (FLEET, key[1], key[2])
            dev_merged, bad = merge_checked([(0, partial)], existing.get(key))
            if not bad:
                fleet_merged, bad = merge_checked([(0, partial)], fleet[fk])
            if bad:
                bad_ids.extend(ids)
                continue
            fleet[fk] = fleet_merged
            upserts.append((key, dev_merged))
            good_ids.extend(ids)
        upserts.extend((k, v) for k, v in sorted(fleet.items()) if v is not None)
        for ids, flag in ((good_ids, 1), (bad_ids, 2)):
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                n = cur.execute(f"UPDATE windows SET rolled = ? WHERE rolled = 0 AND id IN ({','.join('?' * len(part))})",
                                [flag, *part]).rowcount
                if n != len(part):
                    raise _Conflict()
        cur.executemany(
            "INSERT INTO rollups (device, model, bucket_start, bucket_s, n_windows, body, updated_t)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT (device, model, bucket_start, bucket_s) DO UPDATE SET"
            " n_windows = excluded.n_windows, body = excluded.body, updated_t = excluded.updated_t",
            [(d, m, b, p.bucket_s, body.get("n_windows", 1), dumps(body), now) for (d, m, b), body in upserts])
        if bad_ids:
            rejects = [Reject.of(now, "store:rollup", UNMERGEABLE,
                                 f"stored window {i} disagrees with the histogram shape of its model; "
                                 "it is kept in full but left out of rollups: check the agent's profile",
                                 bodies[i].encode()) for i in bad_ids]
            store._write_rejects(cur, rejects)
    return len(good_ids), len(bad_ids)


def _delete_old(store, cutoff: float) -> int:
    deleted = 0
    while True:
        with store._tx() as cur:
            n = cur.execute("DELETE FROM windows WHERE id IN (SELECT id FROM windows WHERE rolled <> 0"
                            f" AND t_start < ? LIMIT {DELETE_CHUNK})", (cutoff,)).rowcount
        deleted += max(n, 0)
        if n < DELETE_CHUNK:
            return deleted
