"""Leases for one-leader jobs (the rollout controller), on the database's clock, with fencing.

A mixin of ``SqlStore`` (it needs ``_tx``, ``DB_NOW`` and ``dialect``). One row per lease:
holder, expiry and epoch. Replicas' wall clocks never enter: the expiry is written and compared
with the database's own clock (``DB_NOW``), so a replica whose clock runs ahead cannot steal a
live lease, nor one whose clock lags keep a dead one.

The epoch is a fencing token. It grows by one whenever the lease is taken by a new holder or
taken again after it lapsed, and never goes back (a release lets the lease lapse, it does not
delete the row). Every write only the leader may make checks it in its own transaction
(``hold_lease``): a leader that stalled past its expiry — a long publish, a paused process —
finds its epoch stale and its write refused, whatever it believes. On PostgreSQL the check
locks the lease row (``FOR SHARE``) until the write commits, so a takeover waits for a write
that passed the check; SQLite's writers are serialised anyway.
"""
from __future__ import annotations

from cloud.store.base import Lease, LeaseLost


class LeasesMixin:
    DB_NOW = "0"  # each engine: an expression for the database's clock in UNIX seconds

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> Lease | None:
        now = self.DB_NOW
        with self._tx() as cur:
            row = cur.execute(
                f"INSERT INTO leases (name, holder, expires_t, epoch) VALUES (?, ?, {now} + ?, 1)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_t = excluded.expires_t,"
                f" epoch = CASE WHEN leases.holder = excluded.holder AND leases.expires_t > {now}"
                " THEN leases.epoch ELSE leases.epoch + 1 END"
                f" WHERE leases.holder = excluded.holder OR leases.expires_t <= {now}"
                " RETURNING epoch, expires_t", (name, holder, float(ttl_s))).fetchone()
        return Lease(name, holder, int(row[0]), float(row[1])) if row else None

    def release_lease(self, name: str, holder: str) -> None:
        with self._tx() as cur:
            cur.execute(f"UPDATE leases SET expires_t = {self.DB_NOW} - 1 WHERE name = ? AND holder = ?",
                        (name, holder))

    def hold_lease(self, cur, lease: Lease) -> None:
        lock = " FOR SHARE" if self.dialect == "postgres" else ""
        row = cur.execute(f"SELECT epoch, holder, expires_t > {self.DB_NOW} FROM leases WHERE name = ?{lock}",
                          (lease.name,)).fetchone()
        if row is None or (int(row[0]), row[1]) != (lease.epoch, lease.holder) or not row[2]:
            now_held = "nobody" if row is None else f"{row[1]} (epoch {row[0]}{'' if row[2] else ', lapsed'})"
            raise LeaseLost(f"lease {lease.name!r} of {lease.holder} (epoch {lease.epoch}) is no longer current: "
                            f"held by {now_held}; this write was refused, the current holder acts")

    def lease(self, name: str) -> tuple[str, int, bool] | None:
        """(holder, epoch, unexpired) of ``name`` as the database sees it now, or None."""
        with self._tx(write=False) as cur:
            row = cur.execute(f"SELECT holder, epoch, expires_t > {self.DB_NOW} FROM leases WHERE name = ?",
                              (name,)).fetchone()
        return (row[0], int(row[1]), bool(row[2])) if row else None
