"""The collector's HTTP app: the operator API, Prometheus metrics and the dashboard.

    create_app(services) -> FastAPI

    /                  the dashboard (static, offline: no CDN); it asks for the token once
    /static/*          its JS modules, CSS and icon
    /api/*             the JSON API (bearer token; role operate for anything but reading)
    /openapi.json      the API's OpenAPI document (bearer token: it maps what there is to attack)
    /metrics           Prometheus text format (bearer token unless ``services.public_metrics``)
    /healthz           liveness (the process serves HTTP), no token, no data
    /readyz            readiness: 200 while messages reach the store, else 503 with the reasons

Tokens come from the collector's configuration (``cloud.api.auth``). They are compared in
constant time, only read from the Authorization header, and never logged. The dashboard
keeps its token in the tab's sessionStorage; ``/#token=...`` hands it over without a prompt
(a URL fragment never reaches the server or its access log).
"""
from __future__ import annotations

import logging
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles

from cloud.api import drift, fleet, metrics, models, rollouts, samples, windows
from cloud.api.auth import TokenBook, require_token
from cloud.api.backend import Backend, Conflict, NotFound, Services, Unavailable
from shared.errors import ConfigError, HarkenError, StoreError

log = logging.getLogger(__name__)

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
API_VERSION = "1.0"
# media-src blob:: the Samples page plays a WAV it fetched with the token (an <audio src> cannot send one)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "media-src 'self' blob:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")

# Declared so the OpenAPI document shows the scheme; ``require_token`` does the checking.
_bearer = HTTPBearer(auto_error=False, description="The collector's http.token")


def _error_handlers(app: FastAPI) -> None:
    def handler(status: int):
        async def handle(request: Request, exc: Exception) -> JSONResponse:
            if status >= 500:
                log.warning("%s %s: %s", request.method, request.url.path, exc)
            return JSONResponse({"detail": str(exc)}, status_code=status)
        return handle

    app.add_exception_handler(NotFound, handler(404))
    app.add_exception_handler(Conflict, handler(409))
    app.add_exception_handler(ConfigError, handler(400))
    app.add_exception_handler(Unavailable, handler(503))
    app.add_exception_handler(StoreError, handler(503))
    app.add_exception_handler(HarkenError, handler(400))


def _dashboard(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=DASHBOARD_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(DASHBOARD_DIR / "index.html", media_type="text/html")


def create_app(services: Services) -> FastAPI:
    """The HTTP app over the collector's parts (see ``cloud.api.backend.Services``)."""
    app = FastAPI(title="Harken collector API", version=API_VERSION, openapi_url=None,
                  docs_url=None, redoc_url=None,
                  description="Fleet, windows, drift, models and rollouts. Every /api route needs "
                              "'Authorization: Bearer <token>'; a token with role read may only GET.")
    app.state.backend = Backend(services)
    app.state.metrics_registry = metrics.registry(app.state.backend)
    app.state.tokens = services.tokens if services.tokens is not None else TokenBook.build(services.token)
    secured = [Depends(_bearer), Depends(require_token)]
    for module in (fleet, windows, drift, models, rollouts, samples):
        app.include_router(module.router, dependencies=secured)
    app.include_router(metrics.router, dependencies=[] if services.public_metrics else secured)
    _error_handlers(app)
    _dashboard(app)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_token)])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        reasons = app.state.backend.readiness()
        return JSONResponse({"ready": not reasons, "reasons": reasons}, status_code=503 if reasons else 200)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if not request.url.path.startswith(("/api/", "/metrics", "/openapi.json", "/readyz")):
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers.setdefault("Cache-Control", "no-cache")
        else:
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app
