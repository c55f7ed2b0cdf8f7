"""``harken serve``'s counters and its Prometheus ``/metrics`` (``shared.exposition``, as the collector).

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

from shared.exposition import Exposition

LATENCY_EDGES_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROUTES = ("/v1/predict", "/v1/feedback", "/metrics", "/healthz", "/readyz")


class ServeMetrics:
    """Thread-safe counters; ``text(extra)`` renders them with the caller's gauges."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter = Counter()  # (route, code)
        self.errors: Counter = Counter()  # error code
        self.latency = {r: [0] * (len(LATENCY_EDGES_S) + 1) for r in ROUTES}
        self.latency_sum = dict.fromkeys(ROUTES, 0.0)
        self.audio_s = 0.0
        self.utterances = 0

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

    def text(self, *, in_flight: int, max_pending: int, models: dict, pipeline: dict, spool_backlog: int) -> str:
        with self._lock:
            requests, errors = sorted(self.requests.items()), sorted(self.errors.items())
            latency = [({"route": r}, list(c), self.latency_sum[r]) for r, c in self.latency.items() if any(c)]
            audio_s, utterances = self.audio_s, self.utterances
        x = Exposition()
        x.family("harken_serve_requests_total", "counter", "HTTP responses by route and status code.",
                 [({"route": r, "code": c}, n) for (r, c), n in requests])
        x.histogram("harken_serve_request_seconds", "Time from request to response, by route.",
                    LATENCY_EDGES_S, latency)
        x.family("harken_serve_errors_total", "counter", "Refused or failed requests by error code.",
                 [({"code": c}, n) for c, n in errors])
        x.family("harken_serve_in_flight", "gauge", "Requests admitted now (running or waiting for the model).",
                 [({}, in_flight)])
        x.family("harken_serve_max_pending", "gauge", "Requests admitted at once, at most (http_max_pending).",
                 [({}, max_pending)])
        x.family("harken_serve_audio_seconds_total", "counter", "Seconds of audio in answered requests.",
                 [({}, round(audio_s, 3))])
        x.family("harken_serve_utterances_total", "counter", "Decisions returned.", [({}, utterances)])
        x.family("harken_serve_model_info", "gauge", "1 per loaded model, by role (active, shadow).",
                 [({"role": role, "model": sha}, 1) for role, sha in sorted(models.items()) if sha])
        for key, name in (("windows", "windows"), ("inferences", "inferences"), ("errors", "inference_errors")):
            x.family(f"harken_serve_pipeline_{name}_total", "counter",
                     f"Pipeline {name.replace('_', ' ')} since start.",
                     [({}, pipeline.get(key, 0))])
        x.family("harken_serve_spool_backlog", "gauge", "Windows and events waiting for the broker.",
                 [({}, spool_backlog)])
        return x.text()
