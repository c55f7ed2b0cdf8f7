"""Drift alerts as a pure state machine: open → (acknowledged) → resolved, with hysteresis.

One alert per (cohort, kind) at a time. Each evaluation the engine produces a ``Finding`` per
(cohort, kind) it could score; ``reconcile`` turns the open alerts (passed in: persistence
is the caller's) and the findings into ``AlertChange``s:

- **opened** — a finding is ``detected`` and no alert is open for its key.
- **updated** — an open alert is seen again. ``material`` is true when a person would want
  to know (top signal changed, severity moved by ``update_ratio`` or more, the driving devices
  changed); otherwise the change only carries bookkeeping (last seen, healthy streak) that the
  caller must still store. An episode keeps the onset it opened with (a later look at a long
  episode may no longer see its start); its pattern follows the latest finding, so a ramp caught
  early (when two blocks cannot tell a ramp from a step) is called gradual once it shows.
- **resolved** — after ``resolve_after`` consecutive *healthy* evaluations: not detected and
  the current level (short-horizon severity) below ``resolve_below`` (< 1). A score that
  hovers around the threshold (level between ``resolve_below`` and 1) is not healthy, so the
  alert neither resolves nor re-opens: no flapping. No data is not health: an alert whose
  cohort sent nothing keeps its state.

Acknowledging (``acknowledge``) marks an alert as seen by a person; it keeps updating and
resolves like any other. Alerts serialize with ``to_dict``/``from_dict`` (JSON-safe), ``to_row``/``from_row`` (the
store's ``alerts`` table: id, status, cohort, signal = kind, pattern, opened_t, updated_t,
resolved_t, acked_t, and everything else inside ``evidence``) and ``to_message`` (the wire
``alert`` kind of ``shared.messages``).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Iterable

STATUSES = ("open", "acked", "resolved")  # as the store's alerts table and the HTTP API spell them
CHANGES = ("opened", "updated", "resolved")


@dataclass(frozen=True)
class AlertPolicy:
    resolve_below: float = 0.7
    resolve_after: int = 3
    update_ratio: float = 1.5


@dataclass(frozen=True)
class Finding:
    """What one evaluation concluded about one (cohort, kind), with its evidence."""

    cohort: str
    kind: str  # input | output | concept
    detected: bool
    level: float | None  # the severity of the most recent block(s) now; None when too little data
    severity: float  # effect over its floor, of what raised it (traffic-independent)
    n: int = 0
    horizon: str | None = None  # change | level | peers | devices: what raised it (see engine)
    pattern: str | None = None  # sudden | gradual
    onset_t: float | None = None
    top: tuple = ()  # top signals: dicts of SignalCheck.to_dict() plus "model"
    devices: tuple = ()  # attribution: dicts {device, share, effect, contribution, driving, alarm}
    tags: tuple = ()  # attribution: dicts {tag, share, contribution, lift, driving}
    models: tuple = ()  # dicts {model, n, severity}
    rule: str | None = None  # multi-device cohorts: robust | devices
    excluded: tuple = ()  # devices left out of the robust cohort score (they alarm on their own)
    tests: dict = field(default_factory=dict)  # what the detectors were held to (cusum h, k, level alpha)

    @property
    def key(self) -> tuple[str, str]:
        return (self.cohort, self.kind)

    def healthy(self, policy: AlertPolicy) -> bool:
        return not self.detected and self.level is not None and self.level < policy.resolve_below

    def evidence(self) -> dict:
        """Everything but what the alert keeps in its own fields (severity, pattern, onset)."""
        d = asdict(self)
        for own in ("detected", "severity", "pattern", "onset_t"):
            d.pop(own)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


@dataclass(frozen=True)
class Alert:
    id: str
    cohort: str
    kind: str
    status: str
    opened_t: float
    updated_t: float
    severity: float
    peak_severity: float
    pattern: str | None
    onset_t: float | None
    evidence: dict = field(default_factory=dict)
    announced: dict = field(default_factory=dict)  # what the last material change told people
    healthy_streak: int = 0
    acked_t: float | None = None
    acked_by: str | None = None
    resolved_t: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.cohort, self.kind)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Alert":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_row(self) -> dict:
        """The store's ``alerts`` row; fields without a column travel in ``evidence``."""
        top = (self.evidence.get("top") or [{}])[0]
        evidence = {**self.evidence, "severity": self.severity, "peak_severity": self.peak_severity,
                    "threshold": top.get("threshold"), "onset_t": self.onset_t,
                    "healthy_streak": self.healthy_streak, "announced": self.announced, "acked_by": self.acked_by}
        return {"id": self.id, "status": self.status, "cohort": self.cohort, "signal": self.kind,
                "pattern": self.pattern or "", "opened_t": self.opened_t, "updated_t": self.updated_t,
                "resolved_t": self.resolved_t, "acked_t": self.acked_t, "evidence": evidence}

    @classmethod
    def from_row(cls, row: dict) -> "Alert":
        ev = dict(row.get("evidence") or {})
        own = {k: ev.pop(k, None) for k in ("severity", "peak_severity", "onset_t", "healthy_streak",
                                           "announced", "acked_by")}
        ev.pop("threshold", None)
        return cls(id=row["id"], cohort=row["cohort"], kind=row["signal"], status=row["status"],
                   opened_t=row["opened_t"], updated_t=row.get("updated_t") or row["opened_t"],
                   severity=own["severity"] or 0.0, peak_severity=own["peak_severity"] or own["severity"] or 0.0,
                   pattern=row.get("pattern") or None, onset_t=own["onset_t"], evidence=ev,
                   announced=own["announced"] or {}, healthy_streak=own["healthy_streak"] or 0,
                   acked_t=row.get("acked_t"), acked_by=own["acked_by"], resolved_t=row.get("resolved_t"))

    def to_message(self) -> dict:
        """The wire form (kind ``alert``); ``signal`` is the drift kind."""
        return {"kind": "alert", "v": "1.0", "id": self.id, "status": self.status, "cohort": self.cohort,
                "signal": self.kind, "pattern": self.pattern or "", "opened_t": self.opened_t,
                "severity": self.severity, "onset_t": self.onset_t, "evidence": self.evidence}


@dataclass(frozen=True)
class AlertChange:
    change: str  # opened | updated | resolved
    alert: Alert
    material: bool = True


def alert_id(cohort: str, kind: str, opened_t: float) -> str:
    """Deterministic id, so collector replicas evaluating the same data agree."""
    return hashlib.blake2b(f"{cohort}|{kind}|{opened_t:.3f}".encode(), digest_size=6).hexdigest()


def _summary(finding: Finding) -> dict:
    return {"severity": finding.severity, "pattern": finding.pattern,
            "top": (finding.top or ({},))[0].get("signal"),
            "drivers": sorted(d["device"] for d in finding.devices if d.get("driving"))}


def open_alert(finding: Finding, now: float) -> Alert:
    return Alert(id=alert_id(finding.cohort, finding.kind, now), cohort=finding.cohort, kind=finding.kind,
                 status="open", opened_t=now, updated_t=now, severity=finding.severity,
                 peak_severity=finding.severity, pattern=finding.pattern, onset_t=finding.onset_t,
                 evidence=finding.evidence(), announced=_summary(finding))


def acknowledge(alert: Alert, now: float, by: str | None = None) -> Alert:
    """Mark an open alert as seen; acknowledging twice keeps the first acknowledgement."""
    if alert.status == "resolved":
        raise ValueError(f"alert {alert.id} is resolved: nothing to acknowledge")
    if alert.status == "acked":
        return alert
    return replace(alert, status="acked", acked_t=now, updated_t=now, acked_by=by)


def _material(alert: Alert, finding: Finding, policy: AlertPolicy) -> bool:
    old, new = alert.announced, _summary(finding)
    ratio = max(new["severity"], 1e-9) / max(old.get("severity", 0.0), 1e-9)
    return (new["pattern"] != old.get("pattern") or new["top"] != old.get("top")
            or new["drivers"] != old.get("drivers") or not 1 / policy.update_ratio < ratio < policy.update_ratio)


def step(alert: Alert | None, finding: Finding | None, now: float,
         policy: AlertPolicy = AlertPolicy()) -> AlertChange | None:
    """One evaluation of one key: the change to store and announce, or None."""
    if alert is None:
        if finding is not None and finding.detected:
            return AlertChange("opened", open_alert(finding, now))
        return None
    if finding is None:
        return None  # no data is not health
    if finding.detected:
        material = _material(alert, finding, policy)
        alert = replace(alert, updated_t=now, healthy_streak=0, severity=finding.severity,
                        peak_severity=max(alert.peak_severity, finding.severity),
                        pattern=finding.pattern or alert.pattern, evidence=finding.evidence(),
                        announced=_summary(finding) if material else alert.announced)
        return AlertChange("updated", alert, material)
    streak = alert.healthy_streak + 1 if finding.healthy(policy) else 0
    if streak >= policy.resolve_after:
        return AlertChange("resolved", replace(alert, status="resolved", resolved_t=now, updated_t=now,
                                               healthy_streak=streak, severity=finding.level or 0.0))
    if streak == alert.healthy_streak:
        return None
    return AlertChange("updated", replace(alert, healthy_streak=streak, updated_t=now), False)


def reconcile(open_alerts: Iterable[Alert], findings: Iterable[Finding], now: float,
              policy: AlertPolicy = AlertPolicy()) -> list[AlertChange]:
    """All changes of one evaluation: open alerts first (stable order), then new ones."""
    by_key = {f.key: f for f in findings}
    changes: list[AlertChange] = []
    seen: set[tuple[str, str]] = set()
    for alert in open_alerts:
        if alert.status == "resolved" or alert.key in seen:
            continue
        seen.add(alert.key)
        change = step(alert, by_key.get(alert.key), now, policy)
        if change is not None:
            changes.append(change)
    for key, finding in sorted(by_key.items()):
        if key not in seen:
            change = step(None, finding, now, policy)
            if change is not None:
                changes.append(change)
    return changes
