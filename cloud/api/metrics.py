"""Prometheus ``/metrics`` in the text exposition format 0.0.4, written by ``prometheus_client``.

The figures are read from the store at scrape time: a collector (``FleetCollector``) yields
the families and each app has its own ``CollectorRegistry`` (``registry(backend)``), so
several apps in one process (tests, the demo) never share or collide on metrics.

Families (every name starts ``harken_``):

    ingest_{messages,windows,events,states,duplicates,store_failures}_total
                                            counters since the collector started
    ingest_rejected_total{code}             rejected messages by code (kept in the store)
    ingest_lag_seconds                      receive time minus window end, latest batch
    ingest_queue_depth                      messages waiting for the writer (bounded)
    ingest_shed_total, ingest_shed_bytes_total  QoS 0 messages dropped because the writer was behind
    ingest_retained_cleared_total           retained stats/event messages cleared from the broker
    ready                                   1 while messages reach the store (as /readyz), else 0
    devices{status}                         online / stale / offline
    devices_running_model{model}            devices whose active model is ``model``
    drift_severity{cohort,kind}             latest drift severity (≥ 1 alarms): the engine's last
                                            findings if shared, else the unresolved alerts'
    alerts{status}, alerts_open{cohort,kind}
    rollout_info{rollout,model,cohort,state}  1 per rollout
    rollout_stage{rollout}, rollout_stages{rollout}, rollout_devices{rollout,status}
    samples{state}, samples_by_reason{reason}  field samples: labelled / unlabelled / conflicts; by reason

Scrape it with the API token: in Prometheus, ``authorization: {credentials: <token>}``.
"""
from __future__ import annotations

from collections import Counter

from typing import Iterable, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cloud.api.backend import Backend
from cloud.api.rollouts import rollout_view

# the format prometheus_client writes for these ASCII names, under the header scrapers have seen
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

router = APIRouter(tags=["metrics"])


class Families:
    """Collects metric families from ``(labels, value)`` pairs; a None value is left out (no fake 0)."""

    def __init__(self):
        self.found: list[Metric] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict, float]]) -> "Families":
        kept = [(labels, value) for labels, value in samples if value is not None]
        names = sorted(kept[0][0]) if kept else []
        fam = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, help_text, labels=names)
        for labels, value in kept:
            fam.add_metric([str(labels[n]) for n in names], value)
        self.found.append(fam)
        return self

def _ingest(x: Families, b: Backend) -> None:
    ing = b.ingest()
    for key, help_text in (("messages", "MQTT messages received"), ("windows", "new statistics windows stored"),
                           ("events", "new device events stored"), ("states", "device states stored"),
                           ("duplicates", "windows received again and ignored"),
                           ("store_failures", "failed store commits (retried)")):
        x.family(f"harken_ingest_{key}_total", "counter", f"{help_text} since the collector started.",
                 [({}, ing.get(f"{key}_total"))])
    x.family("harken_ingest_rejected_total", "counter", "Messages rejected, by error code.",
             [({"code": code}, n) for code, n in sorted(ing["rejected"].items())])
    x.family("harken_ingest_lag_seconds", "gauge", "Receive time minus window end, latest batch.",
             [({}, ing.get("lag_s"))])
    x.family("harken_ingest_queue_depth", "gauge", "Messages waiting for the writer.", [({}, ing["queue_depth"])])
    x.family("harken_ingest_shed_total", "counter", "QoS 0 messages shed because the writer was behind.",
             [({}, ing["shed_total"])])
    x.family("harken_ingest_shed_bytes_total", "counter", "Payload bytes of the shed QoS 0 messages.",
             [({}, ing["shed_bytes_total"])])
    x.family("harken_ingest_retained_cleared_total", "counter", "Retained stats/event messages cleared.",
             [({}, ing["retained_cleared_total"])])
    x.family("harken_ready", "gauge", "1 while messages reach the store (as /readyz), else 0.",
             [({}, 0 if b.readiness() else 1)])


def _devices(x: Families, b: Backend) -> None:
    devices = b.devices()
    status = Counter(d["status"] for d in devices)
    x.family("harken_devices", "gauge", "Devices by status (stale: not heard from recently).",
             [({"status": s}, status.get(s, 0)) for s in ("online", "stale", "offline")])
    running = Counter(d["models"].get("active") for d in devices if d["models"].get("active"))
    x.family("harken_devices_running_model", "gauge", "Devices whose active model is this sha256.",
             [({"model": m}, n) for m, n in sorted(running.items())])


def _drift(x: Families, b: Backend) -> None:
    x.family("harken_drift_severity", "gauge", "Latest drift severity per cohort and kind (>= 1 alarms).",
             [({"cohort": s["cohort"], "kind": s["kind"]}, s["severity"]) for s in b.drift_severities()])
    alerts = b.alerts(None, None)
    by_status = Counter(a["status"] for a in alerts)
    x.family("harken_alerts", "gauge", "Drift alerts by status.",
             [({"status": s}, by_status.get(s, 0)) for s in ("open", "acked", "resolved")])
    open_ = Counter((a["cohort"], a["signal"]) for a in alerts if a["status"] == "open")
    x.family("harken_alerts_open", "gauge", "Open drift alerts per cohort and kind.",
             [({"cohort": c, "kind": s}, n) for (c, s), n in sorted(open_.items())])


def _rollouts(x: Families, b: Backend) -> None:
    views = [rollout_view(r) for r in b.rollouts()]
    x.family("harken_rollout_info", "gauge", "One series per rollout, labelled with its state.",
             [({"rollout": v["id"], "model": v["model"], "cohort": v["cohort"], "state": v["state"]}, 1)
              for v in views])
    x.family("harken_rollout_stage", "gauge", "Index of the rollout's current stage (0-based).",
             [({"rollout": v["id"]}, v["stage_index"]) for v in views])
    x.family("harken_rollout_stages", "gauge", "Number of stages in the rollout's plan.",
             [({"rollout": v["id"]}, len(v["stages"])) for v in views])
    x.family("harken_rollout_devices", "gauge", "Rollout devices by delivery status.",
             [({"rollout": v["id"], "status": s}, v["devices"][s]) for v in views
              for s in ("converged", "pending", "failed")])


def _samples(x: Families, b: Backend) -> None:
    s = b.s.store.sample_summary()
    x.family("harken_samples", "gauge", "Field samples stored, by labelling state.",
             [({"state": k}, s[k]) for k in ("labelled", "unlabelled", "conflicts")])
    x.family("harken_samples_by_reason", "gauge", "Field samples stored, by why the device captured them.",
             [({"reason": r}, n) for r, n in s["by_reason"].items()])


class FleetCollector:
    """A ``prometheus_client`` collector: every scrape reads the backend afresh."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def collect(self) -> Iterator[Metric]:
        x = Families()
        for part in (_ingest, _devices, _drift, _rollouts, _samples):
            part(x, self.backend)
        yield from x.found


def registry(backend: Backend) -> CollectorRegistry:
    """One app's registry (never the process-global one). No describe at registration: the store is
    not read until the first scrape."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FleetCollector(backend))
    return reg


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE)
