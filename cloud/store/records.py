"""Small records kept next to the windows: alerts and a key-value table.

A mixin of ``SqlStore`` (it needs ``_tx``): the alerts drift opens and resolves, and settings that
later parts persist in ``kv``. Leases live in ``cloud.store.leases``.
"""
from __future__ import annotations

import json
import time

import msgspec

from shared.codec import dumps as _dumps
from shared.errors import StoreError

ALERT_COLS = ("id", "status", "cohort", "signal", "pattern", "opened_t", "updated_t", "resolved_t",
              "acked_t", "evidence")


def dumps(value) -> str:
    """Compact, sorted JSON text (the codec's bytes as str)."""
    return _dumps(value).decode()


_DECODER = msgspec.json.Decoder()


def loads(text: str | bytes):
    """Stored JSON text → what ``json.loads`` gives, parsed by msgspec (about five times faster:
    rollups read every window body and bucket they merge). The few texts msgspec refuses and
    ``json.loads`` takes (NaN, numbers past a double, lone surrogate escapes) go to ``json.loads``."""
    try:
        return _DECODER.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


def _marks(n: int) -> str:
    return ",".join("?" * n)


class RecordsMixin:
    # -- alerts -----------------------------------------------------------------------------------
    def save_alert(self, alert: dict) -> None:
        missing = [c for c in ("id", "status", "cohort", "signal", "pattern", "opened_t") if c not in alert]
        if missing:
            raise StoreError(f"an alert needs {', '.join(missing)}; pass every field of the alerts table")
        values = dict(alert)
        values.setdefault("updated_t", values["opened_t"])
        values["evidence"] = dumps(values.get("evidence") or {})
        row = [values.get(c) for c in ALERT_COLS]
        updates = ", ".join(f"{c} = excluded.{c}" for c in ALERT_COLS[1:])
        with self._tx() as cur:
            cur.execute(f"INSERT INTO alerts ({', '.join(ALERT_COLS)}) VALUES ({_marks(len(ALERT_COLS))})"
                        f" ON CONFLICT (id) DO UPDATE SET {updates}", row)

    def _alert_dicts(self, rows) -> list[dict]:
        out = [dict(zip(ALERT_COLS, r)) for r in rows]
        for a in out:
            a["evidence"] = json.loads(a["evidence"])
        return out

    def alert(self, alert_id: str) -> dict | None:
        with self._tx(write=False) as cur:
            rows = cur.execute(f"SELECT {', '.join(ALERT_COLS)} FROM alerts WHERE id = ?", (alert_id,)).fetchall()
        return (self._alert_dicts(rows) or [None])[0]

    def alerts(self, *, status=None, cohort=None) -> list[dict]:
        where, params = [], []
        for col, value in (("status", status), ("cohort", cohort)):
            if value is not None:
                where.append(f"{col} = ?")
                params.append(value)
        sql = (f"SELECT {', '.join(ALERT_COLS)} FROM alerts{' WHERE ' + ' AND '.join(where) if where else ''}"
               " ORDER BY updated_t DESC, id")
        with self._tx(write=False) as cur:
            return self._alert_dicts(cur.execute(sql, params).fetchall())

    # -- kv --------------------------------------------------------------------------------------
    def kv_get(self, key: str):
        with self._tx(write=False) as cur:
            row = cur.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def kv_set(self, key: str, value) -> None:
        with self._tx() as cur:
            cur.execute("INSERT INTO kv (key, value, updated_t) VALUES (?, ?, ?) ON CONFLICT (key)"
                        " DO UPDATE SET value = excluded.value, updated_t = excluded.updated_t",
                        (key, dumps(value), time.time()))
