"""Writing one batch: windows, events, device states, last-seen times, clock offsets, rejects.

A mixin of ``SqlStore`` (it needs ``_tx`` and ``GREATEST``). Everything in a batch is
committed in one transaction, so the collector acknowledges a batch once it is stored.

Time comes from the collector's clock, never from a device's: device clocks drift, jump and
start at 1970. So
- a device's states are ordered by when the collector received them (``state_received_t``):
  one state stamped a year ahead can no longer freeze what the store shows;
- a window is stored exactly once by ``(device, boot, seq)``; once full windows are deleted
  (by receive time, after the retention), ``window_floors`` keeps the highest deleted ``seq``
  per ``(device, boot)``, and a window at or below it is refused as ``too_late`` (it may be a
  redelivered duplicate of a deleted window). No device timestamp is compared with ours;
- each device's clock offset (its clock minus ours) is estimated from its live states and
  windows: the largest ``t - received_t`` over the last ten minutes (transit and queueing only
  make a sample smaller, so the largest is the closest).
"""
from __future__ import annotations

import json
from typing import Iterable

from cloud.store.base import Batch, BatchResult, Received, Reject

OFFSET_WINDOW_S = 600.0  # a clock-offset estimate is the largest sample within this long


class WritesMixin:
    GREATEST = "MAX"

    def write(self, batch: Batch) -> BatchResult:
        if not len(batch) and not batch.seen:
            return BatchResult(0, 0, 0, 0)
        with self._tx() as cur:
            kept, late = self._refuse_below_floors(cur, batch)
            windows_new = self._write_windows(cur, kept)
            events_new = self._write_events(cur, batch)
            staged, ready, refused = self._write_samples(cur, batch)
            self._write_seen(cur, batch.seen)
            for st in batch.states:
                self._write_state(cur, st)
            self._write_offsets(cur, clock_samples(batch.states, kept))
            self._write_rejects(cur, [*batch.rejects, *late, *refused])
        return BatchResult(windows_new, events_new, len(batch.states), len(batch.rejects) + len(late) + len(refused),
                           staged, tuple(ready), len(late))

    # -- windows and events ----------------------------------------------------------------------
    def _refuse_below_floors(self, cur, batch: Batch) -> tuple[list[Received], list[Reject]]:
        """(windows to write, rejects of those whose full copy may have been deleted already).
        ``batch`` is left as it is: a retried commit checks them again, and the collector confirms
        the refused ones to their devices like the rest."""
        if not batch.windows:
            return [], []
        devices = sorted({r.message["device"] for r in batch.windows})
        floors: dict[tuple[str, int], int] = {}
        for i in range(0, len(devices), 500):
            part = devices[i:i + 500]
            rows = cur.execute(f"SELECT device, boot, seq FROM window_floors WHERE device IN "
                               f"({','.join('?' * len(part))})", part).fetchall()
            floors.update({(d, int(b)): int(s) for d, b, s in rows})
        if not floors:
            return batch.windows, []
        kept, late = [], []
        for r in batch.windows:
            w = r.message
            floor = floors.get((w["device"], w["boot"]))
            if floor is None or w["seq"] > floor:
                kept.append(r)
                continue
            late.append(Reject.of(r.received_t, f"device:{w['device']}", "too_late",
                                  f"window boot {w['boot']} seq {w['seq']} arrived after the full windows of its "
                                  f"boot up to seq {floor} were deleted (retention_full_s); it cannot be told "
                                  "from a duplicate any more", (r.body or json.dumps(w)).encode()))
        return kept, late

    def _write_windows(self, cur, windows: list[Received]) -> int:
        if not windows:
            return 0
        rows = []
        for r in windows:
            w = r.message
            rows.append((w["device"], w["boot"], w["seq"], w["t_start"], w["audio_start_s"], w["duration_s"],
                         w.get("model") or "", w.get("shadow_model"), w["automation"], w["agent_version"],
                         r.received_t, r.body if r.body is not None else _dumps(w)))
        rows.sort(key=lambda r: r[:3])  # one key order in every transaction: no deadlocks between replicas
        cur.executemany(
            "INSERT INTO windows (device, boot, seq, t_start, audio_start_s, duration_s, model, shadow_model,"
            " automation, agent_version, received_t, body) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (device, boot, seq) DO NOTHING", rows)
        return max(cur.rowcount, 0)

    def _write_events(self, cur, batch: Batch) -> int:
        if not batch.events:
            return 0
        rows = [(e["device"], e["boot"], e["seq"], e["t"], r.received_t, e["event"], e.get("model"),
                 e.get("reason"), _dumps(e["detail"]) if e.get("detail") is not None else None)
                for r in batch.events for e in (r.message,)]
        rows.sort(key=lambda r: r[:3])
        cur.executemany(
            "INSERT INTO events (device, boot, seq, t, received_t, event, model, reason, detail)"
            " VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (device, boot, seq) DO NOTHING", rows)
        return max(cur.rowcount, 0)

    # -- devices -------------------------------------------------------------------------------------
    def _write_seen(self, cur, seen: dict[str, float]) -> None:
        if seen:
            cur.executemany(
                "INSERT INTO devices (device, first_seen_t, last_seen_t) VALUES (?, ?, ?) ON CONFLICT (device)"
                f" DO UPDATE SET last_seen_t = {self.GREATEST}(devices.last_seen_t, excluded.last_seen_t)",
                [(d, t, t) for d, t in sorted(seen.items())])

    def _write_state(self, cur, received: Received) -> None:
        """The latest state received wins (the collector's clock orders them, not the device's).
        Online states replace the stored one; offline ones (the last will is minimal) are laid
        over it, so the fleet view still shows what the device ran."""
        msg = received.message
        row = cur.execute("SELECT state, state_received_t FROM devices WHERE device = ?",
                          (msg["device"],)).fetchone()
        old_state = json.loads(row[0]) if row and row[0] else None
        old_received = row[1] if row else None
        if old_received is not None and received.received_t < old_received:
            return
        state = msg if msg["online"] or old_state is None else {**old_state, **msg}
        cur.execute("UPDATE devices SET online = ?, state = ?, last_state_t = ?, state_received_t = ?"
                    " WHERE device = ?", (1 if msg["online"] else 0, _dumps(state), msg["t"], received.received_t,
                                          msg["device"]))

    def _write_offsets(self, cur, samples: dict[str, tuple[float, float]]) -> None:
        """Keep the largest offset sample of the last ten minutes (then a newer sample replaces it)."""
        if samples:
            cur.executemany(
                "UPDATE devices SET clock_offset_s = ?, clock_offset_t = ? WHERE device = ? AND"
                " (clock_offset_t IS NULL OR clock_offset_t < ? OR clock_offset_s <= ?)",
                [(offset, at, device, at - OFFSET_WINDOW_S, offset) for device, (offset, at) in sorted(samples.items())])

    def _write_rejects(self, cur, rejects) -> None:
        if not rejects:
            return
        cur.executemany("INSERT INTO rejected (t, topic, code, detail, head_hex, size_bytes) VALUES (?,?,?,?,?,?)",
                        [(r.t, r.topic, r.code, r.detail[:1000], r.head.hex(), r.size_bytes) for r in rejects])
        counts: dict[str, tuple[int, float]] = {}
        for r in rejects:
            n, t = counts.get(r.code, (0, r.t))
            counts[r.code] = (n + 1, max(t, r.t))
        cur.executemany(
            "INSERT INTO reject_counts (code, n, last_t) VALUES (?, ?, ?) ON CONFLICT (code) DO UPDATE SET"
            f" n = reject_counts.n + excluded.n, last_t = {self.GREATEST}(reject_counts.last_t, excluded.last_t)",
            [(code, n, t) for code, (n, t) in sorted(counts.items())])

    # -- floors ----------------------------------------------------------------------------------------
    def _raise_floors(self, cur, deleted: Iterable[tuple[str, int, int]], now: float) -> None:
        """Remember the highest deleted ``seq`` of each ``(device, boot)``."""
        top: dict[tuple[str, int], int] = {}
        for device, boot, seq in deleted:
            key = (device, int(boot))
            top[key] = max(top.get(key, -1), int(seq))
        if top:
            cur.executemany(
                "INSERT INTO window_floors (device, boot, seq, updated_t) VALUES (?, ?, ?, ?) ON CONFLICT"
                f" (device, boot) DO UPDATE SET seq = {self.GREATEST}(window_floors.seq, excluded.seq),"
                " updated_t = excluded.updated_t", [(d, b, s, now) for (d, b), s in sorted(top.items())])


def clock_samples(states: list[Received], windows: list[Received]) -> dict[str, tuple[float, float]]:
    """device → (largest ``device time − receive time`` in a batch, its receive time).

    Live messages only: a retained state replayed by the broker says nothing about the clock.
    A state's ``t`` is when it was sent; a window is sent when it ends (``t_start + duration_s``).
    """
    out: dict[str, tuple[float, float]] = {}
    live = [(r, r.message["t"]) for r in states if not r.retained]
    live += [(r, r.message["t_start"] + r.message["duration_s"]) for r in windows]
    for r, sent_t in live:
        offset = float(sent_t) - r.received_t
        device = r.message["device"]
        if device not in out or offset > out[device][0]:
            out[device] = (offset, r.received_t)
    return out


def _dumps(value) -> str:
    from cloud.store.records import dumps

    return dumps(value)
