"""Receipts: the collector tells a device which of its windows and events it has stored.

    {prefix}/dev/{device}/receipt    cloud → device   QoS 1, not retained
    {"kind": "receipt", "v": "1.0", "device": "dev-0001", "t": 1700000000.0,
     "windows": [[boot, seq], ...], "events": [[boot, seq], ...]}

The broker's PUBACK only says the broker has a message, and a broker can lose what it
acknowledged: mosquitto saves its state every ``autosave_interval`` (60 s), so a crash loses
what arrived since, and after a restart it routes nothing to a shared subscription until the
subscriber subscribes again, so what devices send before the collector is back goes nowhere.
So a device keeps each window and event in its spool until a receipt names it
(``edge.spool.SpoolFlusher``), and sends again one the collector never confirmed while it
confirmed later ones. A message the collector has dealt with for good — stored, a duplicate,
refused as too late or as malformed — is named in a receipt, so nothing is sent forever.

``ref`` is how a spool row and a receipt name the same message: ``stats/{boot}/{seq}`` or
``event/{boot}/{seq}``.
"""
from __future__ import annotations

from shared.codec import decode_raw
from shared.errors import ProtocolError

MAX_REFS = 4096  # per receipt and per list; a collector batch holds at most 500 messages by default
REF_KINDS = {"windows": "stats", "events": "event"}  # receipt list → topic kind of what it names


def ref(topic_kind: str, boot: int, seq: int) -> str:
    return f"{topic_kind}/{boot}/{seq}"


def receipt(device: str, t: float, windows: list[tuple[int, int]], events: list[tuple[int, int]]) -> dict:
    return {"kind": "receipt", "device": device, "t": round(t, 3),
            "windows": [list(p) for p in windows], "events": [list(p) for p in events]}


def refs_of(message: dict) -> list[str]:
    """The spool refs a validated receipt names."""
    return [ref(kind, boot, seq) for field, kind in REF_KINDS.items() for boot, seq in message.get(field) or ()]


def boot_seq(payload: bytes) -> tuple[int, int] | None:
    """(boot, seq) of a window or event payload, even one that is otherwise malformed; None when
    it has no such integers (nothing a device could be told about)."""
    try:
        message = decode_raw(payload)
    except ProtocolError:
        return None
    boot, seq = message.get("boot"), message.get("seq")
    if type(boot) is int and type(seq) is int and 0 <= boot < 2 ** 63 and 0 <= seq < 2 ** 63:
        return boot, seq
    return None
