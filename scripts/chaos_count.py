"""What a chaos run measured, and whether it may say so: the window ledger and the verdict.

A device's window ``seq`` continues from its spool across restarts (``meta.last_seq`` is set
in the transaction that spools the window), so after the run every seq from 0 to
``last_seq`` is a window the device produced and made durable. Each one must be in the
collector's ``windows`` table exactly once, or still in the device's spool:

    lost        produced, not stored and not in the spool
    duplicates  stored rows beyond one per (device, seq), under any boot
    extra       stored but never produced (a seq above the device's last_seq)
    unsent      still in a spool after the drain (not lost, but the drain failed)

``verdict`` refuses figures that measure nothing (no window stored, a fault kind that never
fired or never had its effect) and fails a run that lost, duplicated or left an agent down.
"""
from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import ProtocolError
from shared.messages import decode


@dataclass(frozen=True)
class SpoolReport:
    """One device's spool after its agent stopped: the last seq it made durable, what is left."""

    last_seq: int  # -1: no window yet
    unsent: tuple[int, ...] = ()
    dropped_total: int = 0  # windows the spool's byte bound pushed out
    receipts: bool = False  # the collector's receipts have come: windows wait for theirs


def read_spool(path: Path, timeout_s: float = 30.0) -> SpoolReport:
    """Read an agent's ``spool.db`` without writing to it (the agent may still run). Raises
    ``sqlite3.OperationalError`` while an agent that started on a full disk holds it alone."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout_s)
    try:
        meta = dict(con.execute("SELECT key, value FROM meta"))
        unsent = []
        for topic, payload in con.execute("SELECT topic, payload FROM spool WHERE topic LIKE '%/stats'"):
            try:
                unsent.append(int(decode(bytes(payload), "window")["seq"]))
            except ProtocolError:
                continue
    finally:
        con.close()
    return SpoolReport(int(meta.get("last_seq", -1)), tuple(sorted(unsent)), int(meta.get("dropped_total", 0)),
                       meta.get("receipts") == 1)


def ledger(spools: dict[str, SpoolReport], stored: list[tuple[str, int, int]]) -> dict:
    """Produced vs stored, per the module docstring; ``stored`` is (device, boot, seq) rows."""
    produced = {(d, s) for d, r in spools.items() for s in range(r.last_seq + 1)}
    unsent = {(d, s) for d, r in spools.items() for s in r.unsent}
    per_seq = Counter((d, s) for d, _, s in stored)
    got = set(per_seq)
    lost = produced - got - unsent
    return {"windows_produced": len(produced), "windows_stored": len(stored),
            "lost": len(lost), "duplicates": sum(n - 1 for n in per_seq.values()),
            "extra": len(got - produced), "unsent": len(unsent), "unsent_but_stored": len(unsent & got),
            "spool_dropped": sum(r.dropped_total for r in spools.values()),
            "lost_examples": sorted(lost)[:10]}


@dataclass
class Verdict:
    refused: list[str] = field(default_factory=list)  # nothing to measure: no figures may be printed
    failed: list[str] = field(default_factory=list)  # measured, and an invariant does not hold

    @property
    def ok(self) -> bool:
        return not self.refused and not self.failed


def verdict(windows: dict, faults: dict[str, dict], agents: dict, unexpected_exits: list) -> Verdict:
    """``faults``: {kind: {"fired": n, "effective": m}} for every kind asked for;
    ``agents``: {"total", "alive", "connected"}."""
    v = Verdict()
    if windows["windows_stored"] == 0:
        v.refused.append("no window was stored: nothing was measured")
    for kind, n in faults.items():
        if n["fired"] == 0:
            v.refused.append(f"fault {kind} never fired: run longer or lower --fault-every-s")
        elif n["effective"] == 0:
            v.refused.append(f"fault {kind} fired {n['fired']} time(s) but never took effect "
                             f"({EFFECTS.get(kind, 'its process did not go down')})")
    for key in ("lost", "duplicates", "extra", "unsent"):
        if windows[key]:
            v.failed.append(f"{windows[key]} window(s) {key}")
    if agents["alive"] < agents["total"] or agents["connected"] < agents["total"]:
        v.failed.append(f"{agents['alive']} of {agents['total']} agents alive, {agents['connected']} connected")
    if unexpected_exits:
        v.failed.append(f"{len(unexpected_exits)} process(es) exited without a fault: "
                        + ", ".join(e["process"] for e in unexpected_exits[:5]))
    return v


EFFECTS = {"disk_full": "no agent logged a spool write that failed on its full disk",
           "db_stall": "the collector's writer was never seen waiting on the lock"}
