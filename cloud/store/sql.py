"""The store over SQL, shared by both engines: they differ only in connection and dialect.

Queries are written once with ``?`` placeholders; the PostgreSQL engine rewrites them to
``%s``. Every public method runs under the store's lock, in one transaction, and turns
driver errors into ``StoreError`` (see ``_tx`` in each engine).
"""
from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from abc import abstractmethod
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

from cloud.store import rollup as rollup_mod
from cloud.store.base import DEFAULT_BUCKET_S, FLEET, RollupResult, Store
from cloud.store.migrations import MIGRATIONS, MIGRATIONS_TABLE, check_names
from cloud.store.leases import LeasesMixin
from cloud.store.records import RecordsMixin, loads
from cloud.store.sample_rows import SampleRowsMixin
from cloud.store.samples import SampleStagingMixin
from cloud.store.writes import WritesMixin

log = logging.getLogger(__name__)

PAGE = 1000
IN_CHUNK = 500
WINDOW_COLS = ("id", "device", "boot", "seq", "t_start", "audio_start_s", "duration_s", "model",
               "shadow_model", "automation", "agent_version", "received_t", "rolled", "body")
DEVICE_COLS = ("device, online, first_seen_t, last_seen_t, state, last_state_t, state_received_t, clock_offset_s,"
               " clock_offset_t")


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _chunks(seq: Sequence, n: int | None = None) -> Iterator[Sequence]:
    n = n or IN_CHUNK
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class SqlStore(WritesMixin, SampleStagingMixin, SampleRowsMixin, RecordsMixin, LeasesMixin, Store):
    dialect = "sql"
    GREATEST = "MAX"

    def __init__(self, url: str):
        self.url = url
        self._lock = threading.RLock()

    # -- engine hooks -------------------------------------------------------------------------
    @abstractmethod
    def _transaction(self, write: bool):
        """Context manager: a cursor inside one transaction; driver errors → StoreError."""

    def _q(self, sql: str) -> str:
        return sql

    @contextmanager
    def _tx(self, write: bool = True):
        with self._lock, self._transaction(write) as cur:
            yield _Cursor(cur, self._q)

    def transaction(self, write: bool = True):
        """A cursor (``?`` placeholders) in one transaction, for modules that add their own
        tables through ``apply_migrations`` (the registry, rollouts)."""
        return self._tx(write)

    def _migrate(self) -> None:
        self.apply_migrations(MIGRATIONS)

    def apply_migrations(self, migrations: Sequence) -> list[str]:
        """Apply the named migrations not applied yet, in order, each in its own transaction."""
        check_names(list(migrations))
        applied = []
        with self._tx() as cur:
            self._lock_migrations(cur)
            cur.execute(MIGRATIONS_TABLE)
        for m in migrations:
            with self._tx() as cur:
                self._lock_migrations(cur)
                if cur.execute("SELECT 1 FROM migrations WHERE name = ?", (m.name,)).fetchone():
                    continue
                for statement in m.statements(self.dialect):
                    cur.execute(statement)
                cur.execute("INSERT INTO migrations (name, applied_t) VALUES (?, ?)", (m.name, time.time()))
            log.info("store %s: applied migration %s", self.dialect, m.name)
            applied.append(m.name)
        return applied

    def _lock_migrations(self, cur) -> None:
        """Serialise concurrent openers (SQLite's BEGIN IMMEDIATE already does)."""

    def ping(self) -> None:
        with self._tx(write=False) as cur:
            cur.execute("SELECT 1").fetchone()

    def applied_migrations(self) -> list[str]:
        with self._tx(write=False) as cur:
            return [r[0] for r in cur.execute("SELECT name FROM migrations ORDER BY name").fetchall()]

    # -- windows ------------------------------------------------------------------------------------
    def _window_filter(self, device, devices, model, since, until, time_col: str = "t_start"
                       ) -> tuple[list[str], list]:
        where, params = [], []
        if device is not None:
            where.append("device = ?")
            params.append(device)
        if devices is not None:
            where.append(f"device IN ({_marks(len(devices))})" if devices else "1 = 0")
            params.extend(devices)
        if model is not None:
            where.append("model LIKE ? ESCAPE '\\'")
            params.append(_like_prefix(model))
        if since is not None:
            where.append(f"{time_col} >= ?")
            params.append(since)
        if until is not None:
            where.append(f"{time_col} < ?")
            params.append(until)
        return where, params

    def window_rows(self, *, device=None, devices=None, model=None, since=None, until=None) -> Iterator[dict]:
        devices = list(devices) if devices is not None else None
        groups = [devices] if devices is None or len(devices) <= IN_CHUNK else list(_chunks(devices))
        streams = [self._paged_windows(*self._window_filter(device, g, model, since, until)) for g in groups]
        yield from streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda r: (r["t_start"], r["id"]))

    def _paged_windows(self, where: list[str], params: list) -> Iterator[dict]:
        after: tuple[float, int] | None = None
        while True:
            w, p = list(where), list(params)
            if after is not None:
                w.append("(t_start > ? OR (t_start = ? AND id > ?))")
                p.extend([after[0], after[0], after[1]])
            sql = (f"SELECT {', '.join(WINDOW_COLS)} FROM windows"
                   f"{' WHERE ' + ' AND '.join(w) if w else ''} ORDER BY t_start, id LIMIT {PAGE}")
            with self._tx(write=False) as cur:
                rows = cur.execute(sql, p).fetchall()
            for r in rows:
                d = dict(zip(WINDOW_COLS, r))
                d["body"] = json.loads(d["body"])
                yield d
            if len(rows) < PAGE:
                return
            after = (rows[-1][4], rows[-1][0])

    def windows(self, *, device=None, devices=None, model=None, since=None, until=None) -> Iterator[dict]:
        for row in self.window_rows(device=device, devices=devices, model=model, since=since, until=until):
            yield row["body"]

    def models(self, prefix: str = "") -> list[str]:
        like = _like_prefix(prefix)
        with self._tx(write=False) as cur:
            rows = cur.execute(
                "SELECT DISTINCT model FROM windows WHERE model LIKE ? ESCAPE '\\' UNION "
                "SELECT DISTINCT model FROM rollups WHERE model LIKE ? ESCAPE '\\'", (like, like)).fetchall()
        return sorted({r[0] for r in rows if r[0]})

    def model_starts(self) -> dict[tuple[str, str], float]:
        with self._tx(write=False) as cur:
            self._snapshot(cur)
            rows = cur.execute("SELECT device, model, MIN(bucket_start) FROM rollups WHERE device <> ? "
                               "GROUP BY device, model", [FLEET]).fetchall()
            rows += cur.execute("SELECT device, model, MIN(t_start) FROM windows WHERE rolled = 0 "
                                "GROUP BY device, model").fetchall()
        out: dict[tuple[str, str], float] = {}
        for device, model, t in rows:
            if model and t is not None:
                out[(device, model)] = min(float(t), out.get((device, model), float("inf")))
        return out

    def merged(self, *, devices=None, model=None, since=None, until=None,
               bucket_s: int = DEFAULT_BUCKET_S) -> dict[str, dict]:
        start = rollup_mod.bucket_start(since, bucket_s) if since is not None else None
        devices = list(devices) if devices is not None else None
        bodies: list[tuple[str, dict]] = []
        groups = [None] if devices is None else list(_chunks(devices)) or [[]]
        for group in groups:
            bodies.extend(self._horizon_bodies(group, model, start, until))
        return rollup_mod.merge_by_model(bodies)

    def _horizon_bodies(self, devices, model, start, until) -> list[tuple[str, dict]]:
        """Rollups and unrolled windows of one device group, read in one snapshot."""
        rw, rp = self._window_filter(FLEET if devices is None else None, devices, model, start, until,
                                     time_col="bucket_start")
        ww, wp = self._window_filter(None, devices, model, start, until)
        rollup_sql = "SELECT model, body FROM rollups WHERE " + " AND ".join(rw)
        window_sql = "SELECT model, body FROM windows WHERE rolled = 0" + "".join(f" AND {c}" for c in ww)
        with self._tx(write=False) as cur:
            self._snapshot(cur)
            rows = cur.execute(rollup_sql, rp).fetchall() + cur.execute(window_sql, wp).fetchall()
        return [(m, loads(b)) for m, b in rows]

    def device_buckets(self, *, devices=None, since=None, until=None,
                       bucket_s: int = DEFAULT_BUCKET_S) -> Iterator[dict]:
        start = rollup_mod.bucket_start(since, bucket_s) if since is not None else None
        devices = list(devices) if devices is not None else None
        for group in [None] if devices is None else list(_chunks(devices)):
            rw, rp = self._window_filter(None, group, None, start, until, time_col="bucket_start")
            ww, wp = self._window_filter(None, group, None, start, until)
            with self._tx(write=False) as cur:
                self._snapshot(cur)
                rollups = cur.execute("SELECT device, bucket_start, bucket_s, body FROM rollups WHERE device <> ?"
                                      + "".join(f" AND {c}" for c in rw), [FLEET, *rp]).fetchall()
                raw = cur.execute("SELECT body FROM windows WHERE rolled = 0" + "".join(f" AND {c}" for c in ww),
                                  wp).fetchall()
            for device, b_start, b_s, body in rollups:
                yield {**loads(body), "device": device, "t_start": b_start, "bucket_s": b_s}
            for (body,) in raw:
                yield loads(body)

    def _snapshot(self, cur) -> None:
        """Make the following reads see one snapshot (SQLite read transactions already do)."""

    def rollup(self, bucket_s: int, retention_full_s: float, *, now: float | None = None,
               chunk: int = 2000) -> RollupResult:
        return rollup_mod.run(self, bucket_s, retention_full_s, now=time.time() if now is None else now, chunk=chunk)

    # -- devices ----------------------------------------------------------------------------------
    def _device_dict(self, row, tags: list[str]) -> dict:
        device, online, first, last, state, state_t, received_t, offset, offset_t = row
        return {"device": device, "online": None if online is None else bool(online), "first_seen_t": first,
                "last_seen_t": last, "state": json.loads(state) if state else None, "last_state_t": state_t,
                "state_received_t": received_t, "clock_offset_s": offset, "clock_offset_t": offset_t,
                "tags": tags}

    def devices(self) -> list[dict]:
        with self._tx(write=False) as cur:
            rows = cur.execute(f"SELECT {DEVICE_COLS} FROM devices ORDER BY device").fetchall()
            tags: dict[str, list[str]] = {}
            for d, t in cur.execute("SELECT device, tag FROM device_tags ORDER BY device, tag").fetchall():
                tags.setdefault(d, []).append(t)
        return [self._device_dict(r, tags.get(r[0], [])) for r in rows]

    def device(self, device: str) -> dict | None:
        with self._tx(write=False) as cur:
            row = cur.execute(f"SELECT {DEVICE_COLS} FROM devices WHERE device = ?", (device,)).fetchone()
            tags = [t for (t,) in cur.execute("SELECT tag FROM device_tags WHERE device = ? ORDER BY tag",
                                              (device,)).fetchall()]
        return self._device_dict(row, tags) if row else None

    def tag(self, device: str, tags: Iterable[str]) -> None:
        with self._tx() as cur:
            cur.executemany("INSERT INTO device_tags (device, tag) VALUES (?, ?) ON CONFLICT DO NOTHING",
                            [(device, t) for t in sorted(set(tags))])

    def untag(self, device: str, tags: Iterable[str]) -> None:
        with self._tx() as cur:
            cur.executemany("DELETE FROM device_tags WHERE device = ? AND tag = ?",
                            [(device, t) for t in sorted(set(tags))])

    def tags(self, device: str) -> list[str]:
        with self._tx(write=False) as cur:
            return [t for (t,) in cur.execute("SELECT tag FROM device_tags WHERE device = ? ORDER BY tag",
                                              (device,)).fetchall()]

    def device_tags(self) -> dict[str, list[str]]:
        with self._tx(write=False) as cur:
            out: dict[str, list[str]] = {d: [] for (d,) in cur.execute("SELECT device FROM devices").fetchall()}
            for d, t in cur.execute("SELECT device, tag FROM device_tags ORDER BY device, tag").fetchall():
                out.setdefault(d, []).append(t)
        return out

    def devices_with_tag(self, tag: str) -> list[str]:
        with self._tx(write=False) as cur:
            return [d for (d,) in cur.execute("SELECT device FROM device_tags WHERE tag = ? ORDER BY device",
                                              (tag,)).fetchall()]

    def events(self, *, device=None, since=None, received_since=None, limit: int = 100) -> list[dict]:
        where, params = [], []
        for clause, value in (("device = ?", device), ("t >= ?", since), ("received_t >= ?", received_since)):
            if value is not None:
                where.append(clause)
                params.append(value)
        cols = ("device", "boot", "seq", "t", "received_t", "event", "model", "reason", "detail")
        sql = (f"SELECT {', '.join(cols)} FROM events{' WHERE ' + ' AND '.join(where) if where else ''}"
               f" ORDER BY t DESC, id DESC LIMIT {int(limit)}")
        with self._tx(write=False) as cur:
            rows = cur.execute(sql, params).fetchall()
        out = [dict(zip(cols, r)) for r in rows]
        for e in out:
            e["detail"] = json.loads(e["detail"]) if e["detail"] else None
        return out

    # -- rejects ----------------------------------------------------------------------------------
    def rejected(self, *, code=None, limit: int = 100) -> list[dict]:
        cols = ("t", "topic", "code", "detail", "head_hex", "size_bytes")
        where, params = ("WHERE code = ?", [code]) if code else ("", [])
        with self._tx(write=False) as cur:
            rows = cur.execute(f"SELECT {', '.join(cols)} FROM rejected {where} ORDER BY id DESC"
                               f" LIMIT {int(limit)}", params).fetchall()
        return [dict(zip(cols, r)) for r in rows]

    def reject_counts(self) -> dict[str, int]:
        with self._tx(write=False) as cur:
            return {c: int(n) for c, n in cur.execute("SELECT code, n FROM reject_counts ORDER BY code").fetchall()}

    def prune_rejected(self, keep: int) -> int:
        with self._tx() as cur:
            row = cur.execute(f"SELECT id FROM rejected ORDER BY id DESC LIMIT 1 OFFSET {int(keep)}").fetchone()
            if row is None:
                return 0
            return max(cur.execute("DELETE FROM rejected WHERE id <= ?", (row[0],)).rowcount, 0)


class _Cursor:
    """A driver cursor whose SQL is written with ``?`` placeholders."""

    __slots__ = ("_cur", "_q")

    def __init__(self, cur, q):
        self._cur, self._q = cur, q

    def execute(self, sql: str, params: Sequence = ()):
        self._cur.execute(self._q(sql), tuple(params))
        return self._cur

    def executemany(self, sql: str, rows: Sequence[Sequence]):
        self._cur.executemany(self._q(sql), rows)
        return self._cur

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount
