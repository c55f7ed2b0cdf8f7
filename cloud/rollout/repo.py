"""Persistence of rollouts, their log and operator commands, and per-device desired revs.

Every ``save`` is one transaction: the rollout document, its new log entries (numbered per
rollout) and the commands it handled, so a crash never leaves a half-applied transition.

The controller's repo is fenced: built with ``lease`` (a callable giving the controller's current
``Lease``), every ``save`` first checks in its own transaction that the lease's epoch is still
current (``Store.hold_lease``) and refuses with ``LeaseLost`` otherwise, so a controller that lost
the lease without noticing cannot overwrite what the new one decided. Desired revs are fenced the
same way when a lease is passed. Operator tools (creating a rollout, queueing a command) hold no
lease and write unfenced: they create rows, the controller owns their transitions.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Callable, Iterable, Optional

from cloud.rollout.core import COMMANDS, Command, LogEntry
from cloud.rollout.state import ACTIVE, Rollout
from cloud.store.base import Lease
from cloud.store.migrations_registry import ensure_schema, transaction
from shared.errors import ConfigError

LOG_COLS = ("seq", "t", "event", "from_status", "to_status", "stage", "reason", "figures")


class RolloutRepo:
    def __init__(self, store, lease: Optional[Callable[[], Lease]] = None):
        self.store = store
        self.lease = lease
        ensure_schema(store)

    def save(self, rollout: Rollout, log: Iterable[LogEntry] = (), handled: Iterable[str] = (),
             now: float | None = None) -> None:
        """Write one transition; a fenced repo raises ``LeaseLost`` (writing nothing) if its lease is stale."""
        now = time.time() if now is None else now
        with transaction(self.store) as cur:
            if self.lease is not None:
                self.store.hold_lease(cur, self.lease())
            cur.execute(
                "INSERT INTO rollouts (id, model, status, settled, created_t, updated_t, doc)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
                " settled = excluded.settled, updated_t = excluded.updated_t, doc = excluded.doc",
                (rollout.id, rollout.model, rollout.status, 1 if rollout.settled else 0, rollout.created_t,
                 rollout.updated_t, rollout.to_json()))
            entries = list(log)
            if entries:
                row = cur.execute("SELECT MAX(seq) FROM rollout_log WHERE rollout = ?", (rollout.id,)).fetchone()
                seq = (row[0] or 0) if row else 0
                cur.executemany(
                    "INSERT INTO rollout_log (rollout, seq, t, event, from_status, to_status, stage, reason, figures)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(rollout.id, seq + i + 1, e.t, e.event, e.from_status, e.to_status, e.stage, e.reason,
                      json.dumps(e.figures, sort_keys=True, default=str)) for i, e in enumerate(entries)])
            ids = list(handled)
            if ids:
                cur.executemany("UPDATE rollout_commands SET done_t = ? WHERE id = ?", [(now, i) for i in ids])

    def _docs(self, where: str = "", params: tuple = ()) -> list[Rollout]:
        with transaction(self.store) as cur:
            rows = cur.execute(f"SELECT doc FROM rollouts {where} ORDER BY created_t, id", params).fetchall()
        return [Rollout.from_json(r[0]) for r in rows]

    def get(self, ref: str) -> Rollout:
        """A rollout by id or unique id prefix."""
        exact = self._docs("WHERE id = ?", (ref,))
        if exact:
            return exact[0]
        with transaction(self.store) as cur:
            ids = [r[0] for r in cur.execute("SELECT id FROM rollouts").fetchall() if r[0].startswith(ref or "\0")]
        if len(ids) == 1:
            return self._docs("WHERE id = ?", (ids[0],))[0]
        if ids:
            raise ConfigError(f"rollout {ref!r} is ambiguous ({', '.join(sorted(ids)[:5])}); give more of its id")
        raise ConfigError(f"no rollout {ref!r}; `harken rollout list` shows them")

    def list(self, statuses: Iterable[str] | None = None) -> list[Rollout]:
        statuses = list(statuses) if statuses is not None else None
        if statuses is None:
            return self._docs()
        if not statuses:
            return []
        return self._docs(f"WHERE status IN ({','.join('?' * len(statuses))})", tuple(statuses))

    def workable(self) -> list[Rollout]:
        """Rollouts the controller still acts on: active ones, and finished ones still settling."""
        marks = ",".join("?" * len(ACTIVE))
        return self._docs(f"WHERE status IN ({marks}) OR settled = 0", tuple(sorted(ACTIVE)))

    def busy_devices(self) -> dict[str, str]:
        """device → the active rollout that holds it."""
        return {d: r.id for r in self.workable() for d in r.devices}

    def log(self, rollout_id: str) -> list[dict]:
        with transaction(self.store) as cur:
            rows = cur.execute(f"SELECT {', '.join(LOG_COLS)} FROM rollout_log WHERE rollout = ? ORDER BY seq",
                               (rollout_id,)).fetchall()
        out = [dict(zip(LOG_COLS, r)) for r in rows]
        for e in out:
            e["figures"] = json.loads(e["figures"])
        return out

    def add_command(self, rollout_id: str, action: str, *, actor: str = "", note: str = "",
                    now: float | None = None) -> str:
        if action not in COMMANDS:
            raise ConfigError(f"unknown rollout command {action!r}; use one of {', '.join(COMMANDS)}")
        cid = uuid.uuid4().hex[:12]
        with transaction(self.store) as cur:
            cur.execute("INSERT INTO rollout_commands (id, rollout, action, t, actor, note, done_t)"
                        " VALUES (?, ?, ?, ?, ?, ?, NULL)",
                        (cid, rollout_id, action, time.time() if now is None else now, actor, note))
        return cid

    def open_commands(self, rollout_id: str) -> list[Command]:
        with transaction(self.store) as cur:
            rows = cur.execute("SELECT id, action, t, actor, note FROM rollout_commands"
                               " WHERE rollout = ? AND done_t IS NULL ORDER BY t, id", (rollout_id,)).fetchall()
        return [Command(*r) for r in rows]


class SqlDesiredRevs:
    """The last desired state per device; ``write`` gives the next rev in one transaction.

    The rev never goes below what the device reports it applied (``floor``), so a store
    rebuilt from scratch still sends revs the device accepts.
    """

    def __init__(self, store):
        self.store = store
        ensure_schema(store)

    def write_many(self, builds: dict[str, tuple[Callable[[int, dict | None], dict], int]],
                   lease: Lease | None = None) -> dict[str, dict]:
        """Next revs in one transaction; with ``lease``, only while it is current (else ``LeaseLost``).
        ``build(rev, previous)`` gets the device's last message as this transaction holds it, so a
        writer that keeps some of it (a config, the models) cannot undo another's write meanwhile."""
        greatest = getattr(self.store, "GREATEST", "MAX")
        now, out = time.time(), {}
        with transaction(self.store) as cur:
            if lease is not None:
                self.store.hold_lease(cur, lease)
            for device, (build, floor) in builds.items():
                row = cur.execute(
                    "INSERT INTO desired (device, rev, t, message) VALUES (?, ?, ?, '') ON CONFLICT (device)"
                    f" DO UPDATE SET rev = {greatest}(desired.rev, ?) + 1, t = excluded.t RETURNING rev, message",
                    (device, floor + 1, now, floor)).fetchone()
                rev, previous = row
                out[device] = build(int(rev), json.loads(previous) if previous else None)
                cur.execute("UPDATE desired SET message = ? WHERE device = ?",
                            (json.dumps(out[device], sort_keys=True), device))
        return out

    def write(self, device: str, build: Callable[[int, dict | None], dict], floor: int = 0) -> dict:
        return self.write_many({device: (build, floor)})[device]

    def get(self, device: str) -> dict | None:
        with transaction(self.store) as cur:
            row = cur.execute("SELECT message FROM desired WHERE device = ?", (device,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None
