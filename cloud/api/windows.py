"""Windows: a cohort's time series, exact summaries, raw windows, and ingest figures.

    GET /api/series    ?cohort=fleet&range_s=3600 (or from=&to=) &bucket_s=
                       {from, to, bucket_s, labels, stages, edges, buckets: [row]} — see
                       ``cloud.api.series``; a row holds load, latency p50/p99 per stage, CPU s per
                       audio s, RSS, speech ratio, level/SNR/confidence quantiles and counts, label
                       mix, no-answer rate, shadow agreement, feedback accuracy, feature drift.
                       Buckets that are whole rollup buckets read the rollups (one merge per
                       device, model and rollup bucket, kept past the full-window retention);
                       finer buckets read the full windows.
    GET /api/summary   ?cohort=&range_s= — ``shared.window.summarize`` of the exact merge, per
                       model (``''``: no model) and over all models; ``from`` is moved back to
                       a rollup bucket's start, as the store merges whole buckets
    GET /api/windows   ?cohort=&range_s=&limit= — the stored windows themselves, newest last
    GET /api/ingest    ingest counters, rejects by code, and the most recent rejected messages
"""
from __future__ import annotations

import math
from itertools import islice

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query

from cloud.api.backend import Backend
from cloud.api.deps import backend, time_range
from cloud.api.series import merge_cross_model, pick_bucket_s, time_series
from cloud.drift.stats import psi
from shared.window import summarize

router = APIRouter(tags=["windows"])


def _cohort(b: Backend, cohort: str):
    try:
        return b.cohort(cohort)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


def feature_scorer(b: Backend):
    """PSI of each watched feature against its model's reference profile (None without one)."""
    profiles: dict[str, dict | None] = {}

    def score(sha: str, feats: list) -> dict[str, float] | None:
        if sha not in profiles:
            profiles[sha] = b.reference_profile(sha)
        prof = profiles[sha]
        if not prof or len(prof["features"]["counts"]) != len(feats) or not any(sum(f) for f in feats):
            return None
        ref = prof["features"]["counts"]
        if any(len(r) != len(f) for r, f in zip(ref, feats)):
            return None
        scores = np.atleast_1d(psi(np.array(ref), np.array(feats)))
        return {name: round(float(v), 5) for name, v in zip(prof["features"]["names"], scores)}

    return score


@router.get("/api/series", summary="A cohort's figures over time, in buckets")
def series(cohort: str = "fleet", t_from: float | None = Query(None, alias="from"),
           t_to: float | None = Query(None, alias="to"), range_s: float | None = Query(None, gt=0),
           bucket_s: int | None = Query(None, ge=1), b: Backend = Depends(backend)) -> dict:
    c = _cohort(b, cohort)
    start, end = time_range(b.now(), t_from, t_to, range_s)
    width = bucket_s or pick_bucket_s(end - start)
    try:
        out = time_series(b.bodies(c, start, end, width), t_from=start, t_to=end, bucket_s=width,
                          scorer=feature_scorer(b))
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    return {"cohort": cohort, **out}


@router.get("/api/summary", summary="Exact merge of a cohort's windows over a range, summarized")
def summary(cohort: str = "fleet", t_from: float | None = Query(None, alias="from"),
            t_to: float | None = Query(None, alias="to"), range_s: float | None = Query(None, gt=0),
            b: Backend = Depends(backend)) -> dict:
    c = _cohort(b, cohort)
    start, end = time_range(b.now(), t_from, t_to, range_s)
    start = math.floor(start / b.s.rollup_bucket_s) * b.s.rollup_bucket_s  # the store's merge starts there
    merges = b.merged(c, start, end)
    total = merge_cross_model(merges.values())
    return {"cohort": cohort, "from": start, "to": end,
            "all": summarize(total) if total else None,
            "by_model": {sha: summarize(m) for sha, m in merges.items()}}


@router.get("/api/windows", summary="The stored windows of a cohort")
def windows(cohort: str = "fleet", t_from: float | None = Query(None, alias="from"),
            t_to: float | None = Query(None, alias="to"), range_s: float | None = Query(None, gt=0),
            limit: int = Query(500, ge=1, le=10000), b: Backend = Depends(backend)) -> list[dict]:
    c = _cohort(b, cohort)
    start, end = time_range(b.now(), t_from, t_to, range_s)
    return list(islice(b.windows(c, start, end), limit))


@router.get("/api/ingest", summary="Ingest counters, rejects by code, recent rejected messages")
def ingest(limit: int = Query(20, ge=0, le=1000), b: Backend = Depends(backend)) -> dict:
    return {**b.ingest(), "recent_rejects": b.s.store.rejected(limit=limit) if limit else []}
