"""``harken serve``'s counters and its Prometheus ``/metrics`` (text format 0.0.4 by ``prometheus_client``).

Each ``ServeMetrics`` has its own ``CollectorRegistry`` (never the process-global one); its
collector reads the counters here and the service's gauges at scrape time.

Families (every name starts ``harken_serve_``):

    requests_total{route,code}      responses by route and HTTP status
    request_seconds{route}          latency histogram of the served routes
    errors_total{code}              refused or failed requests by error code (``not_wav``, ``busy``, ...)
    in_flight, max_pending          requests admitted now, and the bound
    audio_seconds_total             audio decoded from accepted requests
    utterances_total                decisions returned
    model_info{role,model}          1 per loaded model (role active or shadow)
    pipeline_{windows,inferences,inference_errors}_total, spool_backlog
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

# the format prometheus_client writes for these ASCII names, under the header scrapers have seen
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_EDGES_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROUTES = ("/v1/predict", "/v1/feedback", "/metrics", "/healthz", "/readyz")


class ServeMetrics:
    """Thread-safe counters; ``text()`` renders them with the gauges ``gauges()`` returns then
    (``in_flight``, ``max_pending``, ``models`` {role: sha}, ``pipeline`` stats, ``spool_backlog``)."""

    def __init__(self, gauges: Callable[[], dict]):
        self.gauges = gauges
        self._lock = threading.Lock()
        self.requests: Counter = Counter()  # (route, code)
        self.errors: Counter = Counter()  # error code
        self.latency = {r: [0] * (len(LATENCY_EDGES_S) + 1) for r in ROUTES}
        self.latency_sum = dict.fromkeys(ROUTES, 0.0)
        self.audio_s = 0.0
        self.utterances = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    @staticmethod
    def route(path: str) -> str:
        """The route label: a known route, else ``other`` (random paths must not grow the series)."""
        return path if path in ROUTES else "other"

    def observe(self, path: str, status: int, seconds: float) -> None:
        route = self.route(path)
        with self._lock:
            self.requests[(route, str(status))] += 1
            if route in self.latency:
                bucket = sum(1 for e in LATENCY_EDGES_S if seconds > e)
                self.latency[route][bucket] += 1
                self.latency_sum[route] += seconds

    def error(self, code: str) -> None:
        with self._lock:
            self.errors[code] += 1

    def served(self, audio_s: float, utterances: int) -> None:
        with self._lock:
            self.audio_s += audio_s
            self.utterances += utterances

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def collect(self) -> Iterator[Metric]:
        """The ``prometheus_client`` collector interface: one consistent snapshot per scrape."""
        with self._lock:
            requests, errors = sorted(self.requests.items()), sorted(self.errors.items())
            latency = [(r, list(c), self.latency_sum[r]) for r, c in self.latency.items() if any(c)]
            audio_s, utterances = self.audio_s, self.utterances
        g = self.gauges()
        fam = CounterMetricFamily("harken_serve_requests_total", "HTTP responses by route and status code.",
                                  labels=["code", "route"])
        for (route, code), n in requests:
            fam.add_metric([code, route], n)
        yield fam
        fam = HistogramMetricFamily("harken_serve_request_seconds", "Time from request to response, by route.",
                                    labels=["route"])
        for route, counts, total in latency:
            cumulative = [sum(counts[:i + 1]) for i in range(len(counts))]
            edges = [repr(float(e)) for e in LATENCY_EDGES_S] + ["+Inf"]
            fam.add_metric([route], list(zip(edges, cumulative)), total)
        yield fam
        fam = CounterMetricFamily("harken_serve_errors_total", "Refused or failed requests by error code.",
                                  labels=["code"])
        for code, n in errors:
            fam.add_metric([code], n)
        yield fam
        yield GaugeMetricFamily("harken_serve_in_flight", "Requests admitted now (running or waiting for the model).",
                                value=g["in_flight"])
        yield GaugeMetricFamily("harken_serve_max_pending", "Requests admitted at once, at most (http_max_pending).",
                                value=g["max_pending"])
        yield CounterMetricFamily("harken_serve_audio_seconds_total", "Seconds of audio in answered requests.",
                                  value=round(audio_s, 3))
        yield CounterMetricFamily("harken_serve_utterances_total", "Decisions returned.", value=utterances)
        fam = GaugeMetricFamily("harken_serve_model_info", "1 per loaded model, by role (active, shadow).",
                                labels=["model", "role"])
        for role, sha in sorted(g["models"].items()):
            if sha:
                fam.add_metric([sha, role], 1)
        yield fam
        for key, name in (("windows", "windows"), ("inferences", "inferences"), ("errors", "inference_errors")):
            yield CounterMetricFamily(f"harken_serve_pipeline_{name}_total", f"Pipeline {name.replace('_', ' ')} "
                                      "since start.", value=g["pipeline"].get(key, 0))
        yield GaugeMetricFamily("harken_serve_spool_backlog", "Windows and events waiting for the broker.",
                                value=g["spool_backlog"])
