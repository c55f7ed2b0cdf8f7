"""The HTTP front of ``harken serve`` (FastAPI; imported only here and in ``edge.serve.cli``).

    POST /v1/predict    audio in the body (WAV, or raw s16le with audio/pcm or ?format=s16le) →
                        the decisions of the served gate and bundle (bearer token)
    POST /v1/feedback   {"utterance": id, "label": true label} or {"utterance": id, "confirm": true}
    GET  /metrics       Prometheus text (bearer token, as the collector's)
    GET  /healthz       the process answers;  GET /readyz  a model is loaded (503 until then)

Every refusal is JSON ``{"error": code, "detail": how to fix it}`` with its status, counted in
``harken_serve_errors_total{code}``; nothing a client sends can stop the server.
"""
from __future__ import annotations

import hmac
import logging
import time

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from edge.serve.inputs import RequestError, resolve_format
from edge.serve.metrics import CONTENT_TYPE
from edge.serve.service import Service

log = logging.getLogger(__name__)

SCHEME = "Bearer"


def check_token(expected: str, header: str | None) -> None:
    """Raise a 401 RequestError unless ``header`` is ``Bearer <expected>`` (constant-time)."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != SCHEME.lower() or not given.strip():
        raise RequestError(401, "unauthorized", "send 'Authorization: Bearer <token>' with the token in the "
                           "server's http_token_file", headers={"WWW-Authenticate": SCHEME})
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise RequestError(401, "unauthorized", "invalid token: use the one in the server's http_token_file",
                           headers={"WWW-Authenticate": SCHEME})


async def read_body(request: Request, limit: int, deadline: float) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (before reading it when it says its length)."""
    too_large = RequestError(413, "body_too_large", f"the request body is over the limit of {limit} bytes "
                             "(http_max_body_bytes): split the audio into shorter requests",
                             extra={"limit_bytes": limit})
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    try:
        with anyio.fail_after(max(0.0, deadline - time.monotonic())):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise too_large
    except TimeoutError:
        raise RequestError(408, "body_timeout", "the body did not arrive within the request's time budget; "
                           "send it faster or raise http_timeout_s") from None
    return bytes(body)


def _service(request: Request) -> Service:
    return request.app.state.service


def _error_response(service: Service, exc: RequestError) -> JSONResponse:
    service.metrics.error(exc.code)
    return JSONResponse({"error": exc.code, "detail": exc.detail, **exc.extra}, status_code=exc.status,
                        headers=exc.headers)


async def _refused(request: Request, exc: RequestError) -> JSONResponse:
    return _error_response(_service(request), exc)


async def _count(request: Request, call_next) -> Response:
    """Counts every response by route and status; a handler bug costs one request (500), never the server."""
    t0 = time.perf_counter()
    try:
        response = await call_next(request)
    except Exception:
        log.exception("%s %s failed", request.method, request.url.path)
        response = _error_response(_service(request), RequestError(
            500, "internal", "the server failed on this request; its log says why"))
    _service(request).metrics.observe(request.url.path, response.status_code, time.perf_counter() - t0)
    return response


async def _predict(request: Request, format: str | None = None) -> JSONResponse:
    service = _service(request)
    cfg = service.config
    deadline = time.monotonic() + cfg.http_timeout_s
    check_token(service.token, request.headers.get("authorization"))
    if not service.admission.enter():
        raise RequestError(503, "busy", f"{service.admission.limit} requests are already in progress "
                           f"(http_max_pending); retry after {cfg.http_retry_after_s} s",
                           headers={"Retry-After": str(cfg.http_retry_after_s)})
    try:
        body = await read_body(request, cfg.http_max_body_bytes, deadline)
        fmt = resolve_format(request.headers.get("content-type"), format, body[:4])
        limiter = request.app.state.limiter
        if limiter is None:  # made in the event loop, at the first request
            limiter = request.app.state.limiter = anyio.CapacityLimiter(service.admission.limit)
        result = await anyio.to_thread.run_sync(service.predict, body, fmt, deadline, limiter=limiter)
    finally:
        service.admission.leave()
    return JSONResponse(result)


async def _feedback(request: Request) -> JSONResponse:
    service = _service(request)
    check_token(service.token, request.headers.get("authorization"))
    try:
        item = await request.json()
    except ValueError:
        item = None
    if not isinstance(item, dict) or not isinstance(item.get("utterance"), str) or not (
            isinstance(item.get("label"), str) or item.get("confirm") is True):
        raise RequestError(400, "bad_feedback", 'send JSON {"utterance": "<id from /v1/predict>", "label": '
                           '"<true label>"} or {"utterance": "<id>", "confirm": true}')
    if not service.feedback(item["utterance"], item.get("label"), item.get("confirm") is True):
        raise RequestError(404, "unknown_utterance", "the utterance is not among the last predictions this "
                           "server remembers, or the label is not one of the model's; check both")
    return JSONResponse({"accepted": True})


async def _metrics(request: Request) -> PlainTextResponse:
    service = _service(request)
    check_token(service.token, request.headers.get("authorization"))
    return PlainTextResponse(service.metrics_text(), media_type=CONTENT_TYPE)


async def _healthz() -> dict:
    return {"ok": True}


async def _readyz(request: Request) -> JSONResponse:
    service = _service(request)
    ready, why = service.readiness()
    body = {"ready": ready, "models": service.models(), **({"detail": why} if why else {})}
    return JSONResponse(body, status_code=200 if ready else 503)


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="harken serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.state.limiter = None
    app.add_exception_handler(RequestError, _refused)
    app.middleware("http")(_count)
    app.add_api_route("/v1/predict", _predict, methods=["POST"])
    app.add_api_route("/v1/feedback", _feedback, methods=["POST"])
    app.add_api_route("/metrics", _metrics, methods=["GET"])
    app.add_api_route("/healthz", _healthz, methods=["GET"])
    app.add_api_route("/readyz", _readyz, methods=["GET"])
    return app
