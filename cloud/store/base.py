"""The store interface: what the collector, the fleet view and drift read and write.

Two engines implement it over one schema (``migrations.py``): SQLite (default) and
PostgreSQL. Writes come in batches (``write``), one transaction per batch, so the
collector can acknowledge a batch of MQTT messages once it is committed. A window is
stored once per ``(device, boot, seq)`` however often it arrives.

Windows are kept in full for ``retention_full_s``; ``rollup`` merges them exactly into
per-(device, model, shadow model) and fleet-wide per-(model, shadow model) buckets as they come, and deletes the full
windows once they are older than the retention. ``merged`` reads a horizon from both.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from shared.errors import StoreError

FLEET = "*"  # rollups.device of the fleet-wide buckets
DEFAULT_BUCKET_S = 300  # rollup bucket width unless configured (a divisor of the drift step)
DEADLINE_GRACE_S = 5.0  # PostgreSQL: a call silent this long past its statement timeout is cut


class StoreDataError(StoreError):
    """The database refused the data itself (out of range, bad text): retrying will not help."""


class StoreConflict(StoreError):
    """Another writer got there first (a deadlock or serialisation failure): retry the transaction."""


class LeaseLost(StoreError):
    """This holder's lease expired or was taken over (a newer epoch): its write was refused."""


@dataclass(frozen=True)
class Lease:
    """A held lease. ``epoch`` grows by one each time the lease changes hands (or is taken again
    after it lapsed): it is the fencing token every leader-only write checks (``Store.hold_lease``).
    ``expires_t`` is on the database's clock."""

    name: str
    holder: str
    epoch: int
    expires_t: float


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def printable(text: str) -> str:
    """Text any database stores: NUL and unpaired surrogates (from bad payloads) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


@dataclass(frozen=True)
class Reject:
    """One message the collector could not use, kept for the operator."""

    t: float
    topic: str
    code: str
    detail: str
    head: bytes  # the first bytes of the payload (at most HEAD_BYTES)
    size_bytes: int
    # (device, topic kind, boot, seq) of a refused window or event, for its receipt; not stored
    ref: tuple[str, str, int, int] | None = None

    HEAD_BYTES = 256

    @classmethod
    def of(cls, t: float, topic: str, code: str, detail: str, payload: bytes,
           ref: tuple[str, str, int, int] | None = None) -> "Reject":
        return cls(t, printable(topic), code, printable(detail), bytes(payload[: cls.HEAD_BYTES]), len(payload),
                   ref)


@dataclass(frozen=True)
class Received:
    """A validated message and when the collector received it (``body``: its JSON text;
    ``retained``: the broker replayed it from its store, so it is not fresh news). A window
    with a ``body`` may hold only its top-level fields (``cloud.window_schema.WindowHeader``)."""

    message: dict
    received_t: float
    body: str | None = None
    retained: bool = False


@dataclass(frozen=True)
class SamplePart:
    """One raw chunk of a field sample (``dev/{device}/sample/{sha256}/{index}``)."""

    device: str
    sha256: str
    index: int
    data: bytes
    received_t: float
    topic: str


@dataclass
class Batch:
    """Everything one commit writes. ``seen`` maps device → latest receive time.

    ``sample_headers`` (validated ``sample`` messages) and ``sample_parts`` stage field samples;
    ``sample_quota_bytes`` caps the bytes a device may send in an hour (None: no cap)."""

    windows: list[Received] = field(default_factory=list)
    events: list[Received] = field(default_factory=list)
    states: list[Received] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    seen: dict[str, float] = field(default_factory=dict)
    sample_headers: list[Received] = field(default_factory=list)
    sample_parts: list[SamplePart] = field(default_factory=list)
    sample_quota_bytes: int | None = None

    def __len__(self) -> int:
        return (len(self.windows) + len(self.events) + len(self.states) + len(self.rejects)
                + len(self.sample_headers) + len(self.sample_parts))

    def see(self, device: str, t: float) -> None:
        if t > self.seen.get(device, float("-inf")):
            self.seen[device] = t


@dataclass(frozen=True)
class BatchResult:
    windows_new: int
    events_new: int
    states: int
    rejects: int
    samples_staged: int = 0  # sample headers and chunks stored for assembly (duplicates not counted)
    samples_ready: tuple = ()  # (device, sha256) whose every chunk is in: ready to assemble
    windows_late: int = 0  # windows refused as too_late (among ``rejects``)


@dataclass(frozen=True)
class RollupResult:
    rolled: int  # windows merged into buckets
    deleted: int  # full windows deleted (older than the retention)
    unmergeable: int  # windows that disagree with their model's shape (left out, counted)


class Store(ABC):
    """A Harken store. Every method raises ``StoreError`` when the database fails."""

    url: str
    dialect: str

    # -- writing --------------------------------------------------------------------------
    @abstractmethod
    def write(self, batch: Batch) -> BatchResult:
        """Commit a batch in one transaction; duplicate windows and events are ignored."""

    def insert_windows(self, windows: Iterable[dict], received_t: float | None = None) -> int:
        t = time.time() if received_t is None else received_t
        batch = Batch(windows=[Received(w, t) for w in windows])
        for w in batch.windows:
            batch.see(w.message["device"], t)
        return self.write(batch).windows_new

    def insert_events(self, events: Iterable[dict], received_t: float | None = None) -> int:
        t = time.time() if received_t is None else received_t
        batch = Batch(events=[Received(e, t) for e in events])
        for e in batch.events:
            batch.see(e.message["device"], t)
        return self.write(batch).events_new

    def upsert_device_state(self, state: dict, received_t: float | None = None) -> None:
        t = time.time() if received_t is None else received_t
        batch = Batch(states=[Received(state, t)])
        batch.see(state["device"], t)
        self.write(batch)

    def insert_rejected(self, rejects: Sequence[Reject]) -> None:
        self.write(Batch(rejects=list(rejects)))

    # -- windows ----------------------------------------------------------------------------
    @abstractmethod
    def windows(self, *, device: str | None = None, devices: Sequence[str] | None = None,
                model: str | None = None, since: float | None = None,
                until: float | None = None) -> Iterator[dict]:
        """Full windows (bodies) in ``[since, until)`` by ``t_start``; ``model`` may be a prefix."""

    @abstractmethod
    def window_rows(self, *, device: str | None = None, devices: Sequence[str] | None = None,
                    model: str | None = None, since: float | None = None,
                    until: float | None = None) -> Iterator[dict]:
        """Like ``windows`` but rows: the indexed columns plus ``body`` (parsed)."""

    @abstractmethod
    def merged(self, *, devices: Sequence[str] | None = None, model: str | None = None,
               since: float | None = None, until: float | None = None,
               bucket_s: int = DEFAULT_BUCKET_S) -> dict[str, dict]:
        """Exact merge over a horizon, per model (``''`` = no model): rollups + unrolled windows.

        ``devices=None`` is the whole fleet. Rolled-up time is counted by bucket: a bucket is
        in the horizon when its start is in ``[floor(since / bucket_s) * bucket_s, until)``.
        """

    @abstractmethod
    def device_buckets(self, *, devices: Sequence[str] | None = None, since: float | None = None,
                       until: float | None = None, bucket_s: int = DEFAULT_BUCKET_S) -> Iterator[dict]:
        """Per-device merges over a horizon, for readers that need devices and time (drift).

        Rolled-up time comes as one merged body per (device, model, shadow model, bucket) with ``device``,
        ``t_start`` (the bucket's start) and ``bucket_s`` added; unrolled windows come as they
        are. Each window counts once. The horizon is bucket-aligned as in ``merged``.
        """

    @abstractmethod
    def models(self, prefix: str = "") -> list[str]:
        """Models (shas) seen in windows or rollups that start with ``prefix``."""

    @abstractmethod
    def model_starts(self) -> dict[tuple[str, str], float]:
        """When each device started on each model: {(device, model): earliest t_start (or bucket)}."""

    @abstractmethod
    def rollup(self, bucket_s: int, retention_full_s: float, *, now: float | None = None,
               chunk: int = 2000) -> RollupResult:
        """Merge unrolled windows into buckets; delete rolled windows older than the retention."""

    # -- devices ------------------------------------------------------------------------------
    @abstractmethod
    def devices(self) -> list[dict]:
        """Every device: device, online (True/False/None), first/last_seen_t, state, last_state_t
        (the state's own time), state_received_t, clock_offset_s (its clock minus ours, None
        until measured) and clock_offset_t, tags."""

    @abstractmethod
    def device(self, device: str) -> dict | None: ...

    @abstractmethod
    def tag(self, device: str, tags: Iterable[str]) -> None: ...

    @abstractmethod
    def untag(self, device: str, tags: Iterable[str]) -> None: ...

    @abstractmethod
    def tags(self, device: str) -> list[str]:
        """The device's tags (a device may be tagged before it is first seen)."""

    @abstractmethod
    def devices_with_tag(self, tag: str) -> list[str]: ...

    @abstractmethod
    def device_tags(self) -> dict[str, list[str]]:
        """Every known device (seen or tagged) → its tags (possibly none)."""

    @abstractmethod
    def events(self, *, device: str | None = None, since: float | None = None,
               received_since: float | None = None, limit: int = 100) -> list[dict]:
        """The most recent events first. ``since`` filters by the event's own time (the device's
        clock), ``received_since`` by when the collector received it (ours)."""

    # -- rejects --------------------------------------------------------------------------------
    @abstractmethod
    def rejected(self, *, code: str | None = None, limit: int = 100) -> list[dict]:
        """The most recent rejected messages first (``head_hex``: their first bytes)."""

    @abstractmethod
    def reject_counts(self) -> dict[str, int]: ...

    @abstractmethod
    def prune_rejected(self, keep: int) -> int:
        """Keep only the newest ``keep`` rejected messages (the counts stay)."""

    # -- alerts -----------------------------------------------------------------------------------
    @abstractmethod
    def save_alert(self, alert: dict) -> None:
        """Insert or replace an alert by ``id`` (fields as in the ``alerts`` table)."""

    @abstractmethod
    def alert(self, alert_id: str) -> dict | None: ...

    @abstractmethod
    def alerts(self, *, status: str | None = None, cohort: str | None = None) -> list[dict]:
        """Alerts, most recently updated first."""

    # -- kv and leases ----------------------------------------------------------------------------
    @abstractmethod
    def kv_get(self, key: str) -> object | None: ...

    @abstractmethod
    def kv_set(self, key: str, value: object) -> None: ...

    @abstractmethod
    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> Lease | None:
        """Take or renew ``name`` for ``holder`` for ``ttl_s`` on the database's clock, unless another
        holder's lease is unexpired (then None). Renewing a live lease keeps its epoch."""

    @abstractmethod
    def release_lease(self, name: str, holder: str) -> None:
        """Let the lease lapse now (its epoch is kept, so the next holder's is higher)."""

    @abstractmethod
    def hold_lease(self, cur, lease: Lease) -> None:
        """Inside a write transaction (``cur``): raise ``LeaseLost`` unless ``lease`` is still current
        and unexpired, and keep it from changing hands until the transaction ends."""

    @abstractmethod
    def lease(self, name: str) -> tuple[str, int, bool] | None:
        """(holder, epoch, unexpired) of lease ``name`` on the database's clock, or None."""

    @abstractmethod
    def ping(self) -> None:
        """Raise ``StoreError`` unless the database answers a trivial query now."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
