"""Bearer-token authentication for the operator API.

Every ``/api/*`` route (and ``/metrics`` unless made public) needs
``Authorization: Bearer <token>`` with the token from the collector's configuration. The
comparison is constant-time. The token is only ever read from that header — never from the
query string, which access logs record — and is never logged.
"""
from __future__ import annotations

import hmac
import logging

from fastapi import HTTPException, Request

log = logging.getLogger(__name__)

SCHEME = "Bearer"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": SCHEME})


def check_token(expected: str | None, header: str | None) -> None:
    """Raise 401 unless ``header`` is ``Bearer <expected>``."""
    if not expected:
        raise _unauthorized("the HTTP API has no token configured: set http.token in the collector "
                            "configuration (or HARKEN_COLLECTOR_HTTP_TOKEN) and restart it")
    if not header:
        raise _unauthorized("missing Authorization header: send 'Authorization: Bearer <token>' "
                            "with the collector's http.token")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != SCHEME.lower() or not given.strip():
        raise _unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise _unauthorized("invalid token: use the collector's http.token")


def require_token(request: Request) -> None:
    """FastAPI dependency: the app's token lives on ``app.state.token``."""
    try:
        check_token(request.app.state.token, request.headers.get("authorization"))
    except HTTPException:
        log.debug("rejected %s %s: bad or missing token", request.method, request.url.path)
        raise
