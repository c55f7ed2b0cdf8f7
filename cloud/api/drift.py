"""Drift alerts and the drift report.

    GET  /api/alerts              ?status=open|acked|resolved&cohort= → {alerts: [alert], now}
    GET  /api/alerts/{id}         one alert: {id, status, cohort, kind, pattern, severity (>= 1 alarms),
                                  peak_severity, level, n, horizon, onset_t, top: [signal checks],
                                  devices / tags: [attribution], models, opened_t, updated_t,
                                  resolved_t, acked_t, acked_by, ack_note, evidence, histograms:
                                  [{model, signal, edges | names, counts, reference, score, ...}]}
    POST /api/alerts/{id}/ack     {note?} → the acknowledged alert (409 if resolved); by = the token's name
    GET  /api/drift/report        ?cohort=&range_s=&step_s= → {cohort, from, to, step_s, kinds,
                                  rows: [{t_start, t_end, <kind>_n, <kind>_severity, <kind>_top,
                                  <kind>_top_score, <kind>_flag}]}  (``cloud.drift.drift_report``)
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from cloud.api.auth import actor
from cloud.api.backend import Backend
from cloud.api.schemas import Alerts
from cloud.api.deps import backend, time_range
from cloud.drift.signals import KINDS

router = APIRouter(tags=["drift"])

STATUSES = ("open", "acked", "resolved")
REPORT_MAX_STEPS = 500


def alert_view(row: dict) -> dict:
    """A stored alert (``cloud.drift.Alert.to_row``) for the API: its headline figures pulled
    out of ``evidence``, the rest of the evidence kept as it is."""
    ev = dict(row.get("evidence") or {})
    return {
        "id": row["id"], "status": row["status"], "cohort": row["cohort"], "kind": row["signal"],
        "signal": row["signal"], "pattern": row.get("pattern") or None,
        "severity": ev.get("severity"), "peak_severity": ev.get("peak_severity"), "level": ev.get("level"),
        "n": ev.get("n"), "horizon": ev.get("horizon"), "onset_t": ev.get("onset_t"),
        "top": [t for t in ev.get("top") or [] if isinstance(t, dict)],
        "devices": ev.get("devices") or [], "tags": ev.get("tags") or [], "models": ev.get("models") or [],
        "rule": ev.get("rule"), "opened_t": row.get("opened_t"), "updated_t": row.get("updated_t"),
        "resolved_t": row.get("resolved_t"), "acked_t": row.get("acked_t"), "acked_by": ev.get("acked_by"),
        "ack_note": ev.get("ack_note"), "evidence": ev,
    }


def _cohort_ok(b: Backend, cohort: str) -> None:
    try:
        b.cohort(cohort)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


@router.get("/api/alerts", summary="Drift alerts, most recently updated first", response_model=Alerts,
            response_model_exclude_unset=True)
def alerts(status: str | None = None, cohort: str | None = None, b: Backend = Depends(backend)) -> dict:
    if status is not None and status not in STATUSES:
        raise HTTPException(400, f"status {status!r} is not one of {', '.join(STATUSES)}")
    return {"alerts": [alert_view(a) for a in b.alerts(status, cohort)], "now": b.now()}


@router.get("/api/alerts/{alert_id}", summary="One alert with its evidence and the histograms behind it")
def alert(alert_id: str, b: Backend = Depends(backend)) -> dict:
    row = b.alert(alert_id)
    return {**alert_view(row), "histograms": b.alert_histograms(row)}


class Ack(BaseModel):
    note: str = Field("", max_length=1000, description="Why, or what is being done about it. Who acknowledged "
                                                       "is the token's name (a 'by' field is ignored).")


@router.post("/api/alerts/{alert_id}/ack", summary="Acknowledge an alert (409 when it is resolved)")
def ack(alert_id: str, request: Request, body: Ack | None = None, b: Backend = Depends(backend)) -> dict:
    body = body or Ack()
    return alert_view(b.ack_alert(alert_id, actor(request), body.note))


@router.get("/api/drift/report", summary="A cohort's drift score table over time")
def report(cohort: str = "fleet", t_from: float | None = Query(None, alias="from"),
           t_to: float | None = Query(None, alias="to"), range_s: float | None = Query(None, gt=0),
           step_s: float | None = Query(None, gt=0), b: Backend = Depends(backend)) -> dict:
    _cohort_ok(b, cohort)
    start, end = time_range(b.now(), t_from, t_to, range_s)
    step = step_s or max(b.drift_config().step_s, (end - start) / 60)
    if (end - start) / step > REPORT_MAX_STEPS:
        raise HTTPException(400, f"{(end - start) / step:.0f} steps is over {REPORT_MAX_STEPS}: ask for a larger "
                                 "step_s or a shorter range")
    return {"cohort": cohort, "from": start, "to": end, "step_s": step, "kinds": list(KINDS),
            "rows": b.drift_report(cohort, start, end, step)}
