"""Registered models with their lineage and evaluation.

    GET /api/models          {models: [{sha256, name, version, labels, created_t, metrics, devices}]}
    GET /api/models/{ref}    {sha256, name, version, labels, aliases, created_t, lineage, metrics,
                              threshold, per_class: [{label, precision, recall, f1, support}],
                              confusion: {labels, matrix} | null, slices: [{tag, value, count, ...}],
                              devices, shadow_devices}

``metrics`` holds the scalar evaluation figures; the per-class table, the confusion matrix
and the slice table come out of the manifest's evaluation into fields of their own.
``{ref}`` is a sha256 or a unique prefix of one, ``name:version`` or an alias.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends

from cloud.api.backend import Backend
from cloud.api.deps import backend
from cloud.api.schemas import Models

router = APIRouter(tags=["models"])


def _confusion(evaluation: dict, labels: list[str]) -> dict | None:
    conf = evaluation.get("confusion") or evaluation.get("confusion_matrix")
    if conf is None:
        return None
    if isinstance(conf, dict):
        return {"labels": list(conf.get("labels") or labels), "matrix": conf.get("matrix") or conf.get("counts")}
    return {"labels": labels, "matrix": conf}


def _slices(evaluation: dict) -> list[dict]:
    slices = evaluation.get("slices") or []
    if isinstance(slices, dict):
        return [{"slice": name, **(v if isinstance(v, dict) else {"value": v})} for name, v in slices.items()]
    return [dict(s) for s in slices]


def _per_class(evaluation: dict, labels: list[str]) -> list[dict]:
    """Rows in the model's label order (the stored manifest's keys are sorted)."""
    per_class = evaluation.get("per_class") or {}
    order = [n for n in labels if n in per_class] + sorted(n for n in per_class if n not in labels)
    return [{"label": name, **per_class[name]} for name in order if isinstance(per_class[name], dict)]


def model_view(m: dict, devices: list[dict] | None = None) -> dict:
    """The API shape of a registry entry (which carries the bundle manifest or its fields)."""
    manifest = m.get("manifest") or m
    sha = m.get("sha256") or manifest.get("model_sha256")
    labels = list(m.get("labels") or manifest.get("labels") or [])
    evaluation = dict(m.get("metrics") or manifest.get("metrics") or {})
    scalars = {k: v for k, v in evaluation.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    running = [d for d in devices or [] if (d.get("models") or {}).get("active") == sha]
    shadow = [d for d in devices or [] if (d.get("models") or {}).get("shadow") == sha]
    threshold = manifest.get("confidence_threshold")
    if isinstance(evaluation.get("threshold"), dict):
        threshold = evaluation["threshold"].get("value", threshold)
    return {
        "sha256": sha, "name": m.get("name") or manifest.get("name"),
        "version": m.get("version") or manifest.get("version"), "labels": labels,
        "aliases": list(m.get("aliases") or []), "created_t": m.get("created_t") or m.get("registered_t"),
        "lineage": manifest.get("lineage") or m.get("lineage") or {},
        "metrics": scalars, "threshold": threshold,
        "per_class": _per_class(evaluation, labels), "confusion": _confusion(evaluation, labels),
        "slices": _slices(evaluation),
        "devices": len(running), "shadow_devices": len(shadow),
    }


@router.get("/api/models", summary="Registered models", response_model=Models, response_model_exclude_unset=True)
def models(b: Backend = Depends(backend)) -> dict:
    devices = b.devices()
    out = []
    for m in b.models():
        v = model_view(m, devices)
        out.append({k: v[k] for k in ("sha256", "name", "version", "labels", "aliases", "created_t", "metrics",
                                      "devices", "shadow_devices")})
    return {"models": out}


@router.get("/api/models/{ref}", summary="One model: lineage, evaluation, confusion matrix, slices")
def model(ref: str, b: Backend = Depends(backend)) -> dict:
    return model_view(b.model(ref), b.devices())
