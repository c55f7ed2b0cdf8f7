"""Exact merging of stored windows into time buckets.

A rollup body is ``shared.window.merge_windows`` of the windows of one bucket — one device (or
the fleet), one model, one shadow model (``''`` for none), one time step — so merging
rollups with each other or with more windows is exactly merging the original windows. A
window whose histograms disagree with its model's shape (a device bug) cannot be merged;
it is left out and reported, never allowed to break the merge of the others.

``run`` is ``Store.rollup`` for the SQL engines, one chunk of unrolled windows at a time. Each
chunk claims its windows (``rolled`` 0 → 1, or 2 when unmergeable) and writes its buckets in one
transaction, so a window is counted once however many collectors roll up at the same time.
Chunks are read in (device, time) order, from the index of unrolled windows: a device's windows
since the last pass come together, so its bucket is read, merged and written once for all of them
rather than once per window (a third of the CPU per window when each device has several).

- PostgreSQL (several collectors). The chunk's transaction takes windows no other collector holds
  (``FOR UPDATE SKIP LOCKED``: replicas roll up different chunks, none merges a chunk twice) and
  locks the device buckets they fall in (``FOR UPDATE``, in key order, so two collectors never wait
  on each other in a circle) before merging: a concurrent merge into one of them waits, then reads
  the merged bucket. Buckets that did not exist when the chunk was read, and the fleet-wide
  bucket of each time step (the one row every chunk touches, so it is not read up front), take
  the chunk's own merge additively at the very end: it is added to the row read ``FOR UPDATE``
  just before the commit, or the row is created. Such a row is held for one merge of two bodies,
  not for the whole chunk, and a bucket another collector created meanwhile costs no retry.
  Should a window disagree with such a bucket's shape, the chunk is merged again with the stored
  buckets locked from the start, so the window is left out of them.
- SQLite (one writer). The chunk is read and merged outside the write lock, then written in one
  short transaction with conditional statements: a bucket read with ``n_windows`` = n is updated
  only ``WHERE n_windows = n`` (it only grows, so it is the bucket's version), a bucket read as
  absent is inserted ``ON CONFLICT DO NOTHING``; a merge onto a bucket that changed meanwhile
  writes nothing and the chunk is retried. PostgreSQL's strict pass writes the same way.

A deadlock or serialisation failure the database still reports (``StoreConflict``) retries the chunk.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from cloud.store.records import loads
from shared.window import merge_windows

UNMERGEABLE = "unmergeable"
DELETE_CHUNK = 5000
FLOOR_KEEP_MIN_S = 30 * 86400.0
IN_CHUNK = 500

Key = tuple[str, str, str, float]  # (device or FLEET, model, shadow model or '', bucket_start)


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


@dataclass
class Plan:
    """What one chunk writes: bucket merges, claimed window ids, unmergeable ids."""

    merges: dict[Key, dict] = field(default_factory=dict)
    good: list[int] = field(default_factory=list)
    bad: list[int] = field(default_factory=list)


def plan(rows: list[tuple[int, str, str, str, float, dict]], bucket_s: int,
         existing: dict[Key, tuple[int, dict]], fleet: str) -> Plan:
    """Merge ``(id, device, model, shadow_model, t_start, body)`` rows into their device and fleet
    buckets (one bucket per shadow model: their shadow sections must not add up).

    A window that fits its device bucket but not the fleet's (its device disagrees with the
    others) is left out of both, so device and fleet buckets always hold the same windows.

    A fleet bucket is the merge of the chunk's per-device merges (a window itself when its device
    has one), not of every window again: a device with several windows in the chunk is summed
    once (float sums, CPU seconds and durations, then round in that order, as PostgreSQL's
    additive fleet merge rounds in its own). Only if those do not fit together are the windows
    merged one by one.
    """
    groups: dict[Key, list[tuple[int, dict]]] = defaultdict(list)
    for wid, device, model, shadow, t_start, body in rows:
        groups[(device, model, shadow, bucket_start(t_start, bucket_s))].append((wid, body))
    out = Plan()
    dev_ok: dict[Key, list[tuple[int, dict]]] = {}
    dev_merge: dict[Key, dict | None] = {}
    for key, items in groups.items():
        dev_merge[key], bad = merge_checked(items, _body(existing.get(key)))
        out.bad.extend(bad)
        gone = set(bad)
        dev_ok[key] = [(i, b) for i, b in items if i not in gone]
    by_fleet: dict[Key, list[tuple[int, dict]]] = defaultdict(list)
    fleet_devices: dict[Key, list[Key]] = defaultdict(list)
    for key, items in dev_ok.items():
        by_fleet[(fleet, *key[1:])].extend(items)
        fleet_devices[(fleet, *key[1:])].append(key)
    for fkey, items in by_fleet.items():
        merged = _merge_deltas(fkey, fleet_devices[fkey], dev_ok, dev_merge, existing)
        if merged is not None:
            out.merges[fkey] = merged
            continue
        merged, bad = merge_checked(items, _body(existing.get(fkey)))
        if bad:  # rare: recompute the device buckets these windows were in
            out.bad.extend(bad)
            gone = set(bad)
            for key in [k for k in dev_ok if k[1:] == fkey[1:]]:
                kept = [(i, b) for i, b in dev_ok[key] if i not in gone]
                if len(kept) != len(dev_ok[key]):
                    dev_ok[key], dev_merge[key] = kept, None
        if merged is not None and len(bad) < len(items):
            out.merges[fkey] = merged
    for key, items in dev_ok.items():
        if not items:
            continue
        merged = dev_merge[key]
        if merged is None:
            merged = merge_windows([b for b in [_body(existing.get(key))] if b] + [b for _, b in items])
        out.merges[key] = merged
        out.good.extend(i for i, _ in items)
    return out


def _body(row: tuple[int, dict] | None) -> dict | None:
    return row[1] if row else None


def _merge_deltas(fkey: Key, devices: list[Key], dev_ok: dict, dev_merge: dict, existing: dict) -> dict | None:
    """The fleet bucket ``fkey`` merged from its ``devices``' windows of the chunk, one merge per
    device (its bucket's merge when that was new, its window when it has one); None if there are
    none or they do not all fit together (``plan`` then merges window by window, leaving the
    misfits out)."""
    base = _body(existing.get(fkey))
    try:
        deltas = []
        for key in devices:
            items = dev_ok[key]
            if len(items) == 1:
                deltas.append(items[0][1])
            elif items and key not in existing and dev_merge[key] is not None:
                deltas.append(dev_merge[key])
            elif items:
                deltas.append(merge_windows([b for _, b in items]))
        return merge_windows(([] if base is None else [base]) + deltas) if deltas else None
    except (ValueError, KeyError, TypeError):
        return None


class _Conflict(Exception):
    """Another collector rolled up some of these windows or buckets first: retry the chunk."""


class _ShapeConflict(Exception):
    """A window of the chunk disagrees with a bucket it was to be added to: merge the chunk onto
    the stored buckets, locked first (strict), so the window is left out of them."""


def run(store, bucket_s: int, retention_full_s: float, *, now: float, chunk: int = 2000):
    """Merge every unrolled window into its buckets, then delete rolled windows past the retention."""
    from cloud.store.base import RollupResult, StoreConflict

    rolled = unmergeable = 0
    strict = False
    while True:
        try:
            n, p = _roll_chunk(store, bucket_s, now, chunk, strict)
        except _ShapeConflict:
            strict = True
            continue
        except (_Conflict, StoreConflict):
            continue
        strict = False
        rolled += len(p.good)
        unmergeable += len(p.bad)
        if n < chunk:
            break
    return RollupResult(rolled, _delete_old(store, now, retention_full_s), unmergeable)


def _roll_chunk(store, bucket_s: int, now: float, chunk: int, strict: bool) -> tuple[int, Plan]:
    """Roll up one chunk; returns (windows read, what was written). See the module's docstring."""
    if store.dialect == "postgres":
        additive = not strict
        with store._tx() as cur:
            rows, p, existing = _read_and_plan(cur, bucket_s, chunk, lock=True, fleet_from_store=not additive)
            if rows:
                _apply(store, cur, p, existing, bucket_s, rows, now, additive=additive)
        return len(rows), p
    with store._tx(write=False) as cur:
        rows, p, existing = _read_and_plan(cur, bucket_s, chunk, lock=False, fleet_from_store=True)
    if rows:
        with store._tx() as cur:
            _apply(store, cur, p, existing, bucket_s, rows, now, additive=False)
    return len(rows), p


def _read_and_plan(cur, bucket_s: int, chunk: int, lock: bool, fleet_from_store: bool) -> tuple[list, Plan, dict]:
    """The chunk's rows, its plan and the stored buckets it was merged onto. Without
    ``fleet_from_store`` the fleet buckets are not read: the plan holds the chunk's own fleet merges."""
    from cloud.store.base import FLEET

    rows = cur.execute("SELECT id, device, model, shadow_model, t_start, body FROM windows WHERE rolled = 0"
                       f" ORDER BY device, t_start, id LIMIT {int(chunk)}"
                       f"{' FOR UPDATE SKIP LOCKED' if lock else ''}").fetchall()
    if not rows:
        return [], Plan(), {}
    parsed = [(i, d, m, sh or "", t, loads(b)) for i, d, m, sh, t, b in rows]
    keys = {(d, m, sh, bucket_start(t, bucket_s)) for _, d, m, sh, t, _ in parsed}
    if fleet_from_store:
        keys |= {(FLEET, m, sh, b) for _, m, sh, b in keys}
    existing = _load(cur, keys, bucket_s, lock=lock)
    return rows, plan(parsed, bucket_s, existing, FLEET), existing


def _load(cur, keys: Iterable[Key], bucket_s: int, lock: bool) -> dict[Key, tuple[int, dict]]:
    """Stored buckets among ``keys``: key → (n_windows, body); ``lock``: FOR UPDATE, taken
    bucket by bucket in time and device order, so two collectors never wait on each other in a circle."""
    wanted = set(keys)
    by_bucket: dict[float, set[str]] = defaultdict(set)
    for device, _, _, start in wanted:
        by_bucket[start].add(device)
    out = {}
    for start, devices in sorted(by_bucket.items()):
        devices = sorted(devices)
        for i in range(0, len(devices), IN_CHUNK):
            part = devices[i:i + IN_CHUNK]
            for row in cur.execute("SELECT device, model, shadow_model, n_windows, body FROM rollups"
                                   " WHERE bucket_start = ? AND bucket_s = ?"
                                   f" AND device IN ({','.join('?' * len(part))})"
                                   f"{' ORDER BY device, model, shadow_model FOR UPDATE' if lock else ''}",
                                   [start, bucket_s, *part]).fetchall():
                key = (row[0], row[1], row[2], start)
                if key in wanted:
                    out[key] = (row[3], loads(row[4]))
    return out


def _apply(store, cur, p: Plan, existing: dict, bucket_s: int, rows: list, now: float, additive: bool) -> None:
    """Claim the chunk's windows and write its buckets in the transaction of ``cur``; raise
    ``_Conflict`` (the caller's transaction then rolls back) if another collector got there first.
    ``additive``: a bucket not in ``existing`` (every fleet bucket: they were not read) holds the
    chunk's own merge and is added to the stored row under a row lock at the end, or created;
    the fleet rows, which every chunk touches, come last of all."""
    from cloud.store.base import FLEET, Reject
    from cloud.store.records import dumps

    for ids, flag in ((p.good, 1), (p.bad, 2)):
        for i in range(0, len(ids), IN_CHUNK):
            part = sorted(ids[i:i + IN_CHUNK])
            marks = ",".join("?" * len(part))
            n = cur.execute(f"UPDATE windows SET rolled = ? WHERE rolled = 0 AND id IN ({marks})",
                            [flag, *part]).rowcount
            if n != len(part):
                raise _Conflict()
    updates, inserts, late = [], [], []
    for key, body in sorted(p.merges.items(), key=lambda kv: (kv[0][0] == FLEET, kv[0])):
        values = (body.get("n_windows", 1), dumps(body), now)
        if key in existing:
            updates.append((*values, *key, bucket_s, existing[key][0]))
        elif additive:
            late.append((key, body))
        else:
            inserts.append((*key, bucket_s, *values))
    if updates:  # only if the bucket is still the version this merge started from
        n = cur.executemany("UPDATE rollups SET n_windows = ?, body = ?, updated_t = ? WHERE device = ?"
                            " AND model = ? AND shadow_model = ? AND bucket_start = ? AND bucket_s = ?"
                            " AND n_windows = ?", updates).rowcount
        if n != len(updates):
            raise _Conflict()
    if inserts:  # only if nobody created the bucket meanwhile
        n = cur.executemany("INSERT INTO rollups (device, model, shadow_model, bucket_start, bucket_s,"
                            " n_windows, body, updated_t) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT"
                            " (device, model, shadow_model, bucket_start, bucket_s) DO NOTHING",
                            inserts).rowcount
        if n != len(inserts):
            raise _Conflict()
    for key, delta in late:  # last, fleet rows after device rows: the rows every chunk adds to are held shortest
        _add_to_bucket(cur, key, delta, bucket_s, now)
    if p.bad:
        bodies = {r[0]: r[5] for r in rows}
        store._write_rejects(cur, [Reject.of(
            now, "store:rollup", UNMERGEABLE, f"stored window {i} disagrees with the histogram shape of its "
            "model; it is kept in full but left out of rollups: check the agent's profile",
            bodies[i].encode()) for i in p.bad])


def _add_to_bucket(cur, key: Key, delta: dict, bucket_s: int, now: float) -> None:
    """Merge ``delta`` into the stored bucket ``key`` under a row lock, or create it; ``_ShapeConflict``
    if they do not merge."""
    from cloud.store.records import dumps

    where = "device = ? AND model = ? AND shadow_model = ? AND bucket_start = ? AND bucket_s = ?"
    params = [*key, bucket_s]
    for _ in range(2):  # absent, then created by another collector meanwhile: it exists the second time
        row = cur.execute(f"SELECT body FROM rollups WHERE {where} FOR UPDATE", params).fetchone()
        if row is not None:
            try:
                merged = merge_windows([loads(row[0]), delta])
            except (ValueError, KeyError, TypeError):
                raise _ShapeConflict() from None
            cur.execute(f"UPDATE rollups SET n_windows = ?, body = ?, updated_t = ? WHERE {where}",
                        [merged.get("n_windows", 1), dumps(merged), now, *params])
            return
        if cur.execute("INSERT INTO rollups (device, model, shadow_model, bucket_start, bucket_s, n_windows, body,"
                       " updated_t) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (device, model, shadow_model, bucket_start,"
                       " bucket_s) DO NOTHING", [*params, delta.get("n_windows", 1), dumps(delta), now]).rowcount == 1:
            return
    raise _Conflict()


def _delete_old(store, now: float, retention_full_s: float) -> int:
    """Delete rolled windows received more than the retention ago (our clock, not the device's),
    raising the floors that keep exactly-once for what was deleted; forget old floors."""
    deleted = 0
    while True:
        with store._tx() as cur:
            gone = cur.execute("DELETE FROM windows WHERE id IN (SELECT id FROM windows WHERE rolled <> 0"
                               f" AND received_t < ? LIMIT {DELETE_CHUNK}) RETURNING device, boot, seq",
                               (now - retention_full_s,)).fetchall()
            store._raise_floors(cur, gone, now)
        deleted += len(gone)
        if len(gone) < DELETE_CHUNK:
            break
    with store._tx() as cur:
        cur.execute("DELETE FROM window_floors WHERE updated_t < ?", (now - floor_keep_s(retention_full_s),))
    return deleted


def floor_keep_s(retention_full_s: float) -> float:
    """How long a (device, boot) floor outlives its last deletion: far past any redelivery (a broker
    session expires within days, a device spool holds hours), so a duplicate cannot come later."""
    return max(FLOOR_KEEP_MIN_S, 4 * retention_full_s)
