"""Drift alerts and the drift report.

    GET  /api/alerts              ?status=open|acked|resolved&cohort= → {alerts: [alert], now}
    GET  /api/alerts/{id}         one alert: {id, status, cohort, signal, pattern, score, threshold,
                                  top: [{feature, score}], opened_t, updated_t, resolved_t, acked_t,
                                  acked_by, evidence}
    POST /api/alerts/{id}/ack     {by?, note?} → the acknowledged alert
    GET  /api/drift/report        ?cohort= → {cohort, rows: [{model, signal, score, threshold, n, drifted}]}
"""
from __future__ import annotations

import json

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from cloud.api.backend import Backend
from cloud.api.deps import backend

router = APIRouter(tags=["drift"])

STATUSES = ("open", "acked", "resolved")


def _top(evidence: dict) -> list[dict]:
    top = evidence.get("top") or evidence.get("top_features") or []
    out = []
    for item in top:
        if isinstance(item, dict):
            out.append({"feature": item.get("feature") or item.get("name") or item.get("signal"),
                        "score": item.get("score", item.get("severity"))})
        elif isinstance(item, (list, tuple)) and item:
            out.append({"feature": item[0], "score": item[1] if len(item) > 1 else None})
        else:
            out.append({"feature": str(item), "score": None})
    return out


def alert_view(row: dict) -> dict:
    evidence = row.get("evidence") or {}
    if isinstance(evidence, str):
        evidence = json.loads(evidence)
    return {
        "id": row["id"], "status": row["status"], "cohort": row["cohort"], "signal": row["signal"],
        "pattern": row["pattern"], "score": evidence.get("score", evidence.get("severity")),
        "threshold": evidence.get("threshold", evidence.get("critical")), "top": _top(evidence),
        "opened_t": row.get("opened_t"), "updated_t": row.get("updated_t"), "resolved_t": row.get("resolved_t"),
        "acked_t": row.get("acked_t"), "acked_by": evidence.get("acked_by") or row.get("acked_by"),
        "evidence": evidence,
    }


@router.get("/api/alerts", summary="Drift alerts, most recently updated first")
def alerts(status: str | None = None, cohort: str | None = None, b: Backend = Depends(backend)) -> dict:
    if status is not None and status not in STATUSES:
        raise HTTPException(400, f"status {status!r} is not one of {', '.join(STATUSES)}")
    return {"alerts": [alert_view(a) for a in b.alerts(status, cohort)], "now": b.now()}


@router.get("/api/alerts/{alert_id}", summary="One alert with its evidence")
def alert(alert_id: str, b: Backend = Depends(backend)) -> dict:
    return alert_view(b.alert(alert_id))


class Ack(BaseModel):
    by: str = Field("api", max_length=100, description="Who acknowledges (shown on the alert).")
    note: str = Field("", max_length=1000, description="Why, or what is being done about it.")


@router.post("/api/alerts/{alert_id}/ack", summary="Acknowledge an alert")
def ack(alert_id: str, body: Ack | None = None, b: Backend = Depends(backend)) -> dict:
    body = body or Ack()
    return alert_view(b.ack_alert(alert_id, body.by, body.note))


@router.get("/api/drift/report", summary="The drift score table of a cohort")
def report(cohort: str = "fleet", b: Backend = Depends(backend)) -> dict:
    try:
        b.cohort(cohort)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    return b.drift_report(cohort)
