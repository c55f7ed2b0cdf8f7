"""Field samples: list, one sample, its audio, labelling; the collector's switches and requests.

    GET  /api/samples                 ?device=&model=&reason=&label=&alert=&unlabelled=&conflicts=&limit=
                                      {summary: {total, labelled, unlabelled, conflicts, by_reason, by_label},
                                       samples: [sample], now}
    GET  /api/samples/{id}            one sample: {id, sha256, device, model, utterance, captured_t,
                                      received_t, predicted, confidence, reason, alert, request, duration_ms,
                                      size_bytes, label, labelled_t, conflict, labels: [{label, by, t}],
                                      model_labels: [label] | null (the registered model's labels)}
    GET  /api/samples/{id}/audio      the WAV file (audio/wav); the dashboard fetches it with its token
    POST /api/samples/{id}/label      {label, new_label?} → the sample; who labelled = the token's name
    POST /api/samples/switch          {devices: [id], on: bool} → the queued command (202)
    POST /api/samples/request         {alert, before_s?, after_s?, max_clips?, devices?} → the queued command (202)

``{id}`` is a sample id (16 hex digits), its sha256 or a unique prefix of at least 4 digits.
Reading needs a ``read`` token; labelling and commands an ``operate`` token (``cloud.api.auth``).
"""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from cloud.api.auth import actor
from cloud.api.backend import Backend, NotFound
from cloud.api.deps import backend
from cloud.samples import control
from cloud.samples.labels import label_sample, model_labels
from shared.samples import REASONS

router = APIRouter(tags=["samples"])
Reason = Literal[REASONS]


def _sample(b: Backend, ref: str) -> dict:
    found = b.s.store.sample(ref)
    if found is None:
        raise NotFound(f"no sample {ref!r}")
    return found


@router.get("/api/samples", summary="Field samples, newest first")
def samples(device: str | None = None, model: str | None = None, reason: Reason | None = None,
            label: str | None = None, alert: str | None = None, unlabelled: bool = False, conflicts: bool = False,
            limit: int = Query(200, ge=1, le=5000), b: Backend = Depends(backend)) -> dict:
    rows = b.s.store.samples(device=device, model=model, reason=reason, label=label, alert=alert,
                             unlabelled=unlabelled, conflicts=conflicts, limit=limit)
    return {"summary": b.s.store.sample_summary(), "samples": rows, "now": b.now()}


@router.get("/api/samples/{ref}", summary="One sample with its label history and its model's labels")
def sample(ref: str, b: Backend = Depends(backend)) -> dict:
    s = _sample(b, ref)
    return {**s, "model_labels": model_labels(b.s.registry, s["model"])}


@router.get("/api/samples/{ref}/audio", summary="The sample's WAV file", response_class=Response)
def audio(ref: str, b: Backend = Depends(backend)) -> Response:
    s = _sample(b, ref)
    data = b.sample_files().read(s["sha256"])
    return Response(data, media_type="audio/wav", headers={"ETag": f'"{s["sha256"]}"'})


class LabelBody(BaseModel):
    label: str = Field(..., min_length=1, max_length=64)
    new_label: bool = Field(False, description="Allow a label the sample's model does not have.")


@router.post("/api/samples/{ref}/label", summary="Label a sample (the token's name is recorded)")
def label(ref: str, body: LabelBody, request: Request, b: Backend = Depends(backend)) -> dict:
    s = label_sample(b.s.store, ref, body.label, by=actor(request), registry=b.s.registry, allow_new=body.new_label,
                     now=b.now())
    return {**s, "model_labels": model_labels(b.s.registry, s["model"])}


class SwitchBody(BaseModel):
    devices: list[str] = Field(..., min_length=1, max_length=10000)
    on: bool


@router.post("/api/samples/switch", status_code=202, summary="Switch opted-in devices' uploads off or on")
def switch(body: SwitchBody, request: Request, b: Backend = Depends(backend)) -> dict:
    return control.switch(b.s.store, body.devices, body.on, actor=actor(request), now=b.now())


class RequestBody(BaseModel):
    alert: str = Field(..., min_length=1, max_length=200)
    before_s: float = Field(control.DEFAULT_BEFORE_S, ge=0, le=86400)
    after_s: float = Field(control.DEFAULT_AFTER_S, ge=0, le=86400)
    max_clips: int = Field(control.DEFAULT_MAX_CLIPS, ge=1, le=10000)
    devices: list[str] | None = None


@router.post("/api/samples/request", status_code=202, summary="Ask devices for the utterances around an alert")
def request_alert(body: RequestBody, request: Request, b: Backend = Depends(backend)) -> dict:
    return control.request_alert(b.s.store, body.alert, actor=actor(request), before_s=body.before_s,
                                 after_s=body.after_s, max_clips=body.max_clips, devices=body.devices, now=b.now())
