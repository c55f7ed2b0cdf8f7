"""Rollouts: list, status, start, and the operator's actions.

    GET  /api/rollouts                  {rollouts: [rollout], now}
    GET  /api/rollouts/{id}             {id, model, model_name, cohort, strategy, state, reason,
                                         stage_index, stages: [{name, kind, percent, bake_s,
                                         automation, status}], gates: [{stage, gate, verdict, reason,
                                         figures, t}], devices: {total, converged, pending, failed},
                                         log: [{t, event, from, to, stage, reason}], actions,
                                         pending_commands: [{id, action, t, actor, note}], created_t,
                                         updated_t}
    POST /api/rollouts                  {model, cohort, strategy, steps?, bake?, approval?} → rollout
    POST /api/rollouts/{id}/{action}    action: pause | resume | approve | abort | rollback; {reason?}
                                        → 202 and the rollout: the command is queued in the store and
                                        carried out at the controller's next tick
"""
from __future__ import annotations

from collections import Counter
from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from cloud.api.auth import actor
from cloud.api.backend import Backend
from cloud.api.deps import backend
from cloud.api.schemas import Rollouts
from cloud.rollout.state import ACTIVE, TERMINAL, Rollout

router = APIRouter(tags=["rollouts"])

Action = Literal["pause", "resume", "approve", "abort", "rollback"]

# Which actions make sense in which status (the controller decides; this only greys buttons).
ALLOWED = {
    "pending": ("pause", "abort"), "running": ("pause", "abort", "rollback"),
    "paused": ("resume", "abort", "rollback"), "awaiting_approval": ("approve", "pause", "abort", "rollback"),
    "completed": ("rollback",),
}


def is_active(r) -> bool:
    return (r["status"] if isinstance(r, dict) else r.status) in ACTIVE


def _as_rollout(r) -> Rollout:
    return r if isinstance(r, Rollout) else Rollout.from_dict(r)


def _stage_status(r: Rollout, i: int) -> str:
    if r.status == "completed" or i < r.stage:
        return "passed"
    if i > r.stage:
        return "pending"
    return {"running": "running", "pending": "pending", "paused": "paused",
            "awaiting_approval": "awaiting_approval"}.get(r.status, r.status)


def _strategy(r: Rollout) -> str:
    kinds: list[str] = []
    for st in r.plan:
        if st.kind not in kinds:
            kinds.append(st.kind)
    return ",".join(kinds)


def _gates(r: Rollout) -> list[dict]:
    out = []
    for v in r.verdicts:
        for g in v.get("gates") or []:
            out.append({"stage": v.get("label", v.get("stage")), "gate": g["gate"], "verdict": g["verdict"],
                        "reason": g.get("reason"), "figures": g.get("figures") or {}, "t": v.get("t")})
    return out


def _log(entries) -> list[dict]:
    out = []
    for e in entries:
        d = e if isinstance(e, dict) else e.__dict__
        out.append({"t": d.get("t"), "event": d.get("event"), "from": d.get("from_status", d.get("from")),
                    "to": d.get("to_status", d.get("to")), "stage": d.get("stage"), "reason": d.get("reason")})
    return out


def rollout_view(raw, log=()) -> dict:
    r = _as_rollout(raw)
    tracks = Counter(t.status for t in r.tracks.values())
    return {
        "id": r.id, "model": r.model, "model_name": r.model_label, "cohort": r.cohort, "strategy": _strategy(r),
        "state": r.status, "reason": r.reason, "approval": r.approval, "stage_index": r.stage,
        "stages": [{"name": st.label, "kind": st.kind, "percent": st.percent, "bake_s": st.bake_s,
                    "automation": st.automation, "status": _stage_status(r, i)} for i, st in enumerate(r.plan)],
        "gates": _gates(r),
        "devices": {"total": len(r.devices), "converged": tracks["converged"], "pending": tracks["pending"],
                    "failed": tracks["failed"]},
        "log": _log(log), "actions": list(ALLOWED.get(r.status, ())),
        "terminal": r.status in TERMINAL, "created_t": r.created_t, "updated_t": r.updated_t,
    }


@router.get("/api/rollouts", summary="Every rollout, newest first", response_model=Rollouts,
            response_model_exclude_unset=True)
def rollouts(b: Backend = Depends(backend)) -> dict:
    views = [rollout_view(r) for r in b.rollouts()]
    views.sort(key=lambda v: v["created_t"] or 0, reverse=True)
    return {"rollouts": views, "now": b.now()}


def _full_view(b: Backend, ref: str) -> dict:
    r = b.rollout(ref)
    return {**rollout_view(r, b.rollout_log(r.id)), "pending_commands": b.pending_commands(r.id)}


@router.get("/api/rollouts/{rollout_id}", summary="One rollout: stages, gate verdicts, transition log")
def rollout(rollout_id: str, b: Backend = Depends(backend)) -> dict:
    return _full_view(b, rollout_id)


class Start(BaseModel):
    model: str = Field(..., min_length=4, max_length=64, description="Registered model sha256 (or a prefix).")
    cohort: str = Field("fleet", max_length=200, description="fleet, tag:NAME, device:ID or model:SHA.")
    strategy: str = Field("canary", max_length=200, description="shadow, canary, blue-green, or a comma list.")
    steps: str | None = Field(None, max_length=100, description="Canary steps in percent, e.g. 5,25,100.")
    bake: str | None = Field(None, max_length=20, description="Bake time per stage, e.g. 10m.")
    approval: Literal["auto", "manual"] = "auto"


class Act(BaseModel):
    reason: str = Field("", max_length=1000, description="Why; the log names the token, not a 'by' field.")


@router.post("/api/rollouts", summary="Start a rollout", status_code=201)
def start(body: Start, request: Request, b: Backend = Depends(backend)) -> dict:
    spec = body.model_dump(exclude_none=True)
    return rollout_view(b.start_rollout(spec, actor=actor(request)))


@router.post("/api/rollouts/{rollout_id}/{action}", status_code=202,
             summary="Queue pause, resume, approve, abort or rollback for the controller's next tick")
def act(rollout_id: str, action: Action, request: Request, body: Act | None = None,
        b: Backend = Depends(backend)) -> dict:
    body = body or Act()
    b.act(rollout_id, action, actor(request), body.reason)
    return _full_view(b, rollout_id)
