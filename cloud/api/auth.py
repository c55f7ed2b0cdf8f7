"""Bearer-token authentication and roles for the operator API.

Every ``/api/*`` route, ``/openapi.json`` (and ``/metrics`` unless made public) needs
``Authorization: Bearer <token>``. A token has a name and a role:

    read      every GET: fleet, windows, drift, models, rollouts, metrics, the OpenAPI document
    operate   also every other method: start and steer rollouts, acknowledge alerts

Tokens come from the collector's configuration: ``http_token`` is one ``operate`` token named
``operator``; ``http_tokens_file`` lists more, one per line ``NAME ROLE TOKEN`` (``#``
comments). The audit log (who paused a rollout, who acknowledged an alert) records the
token's name, never a name the request body claims. Tokens are compared in constant time
(each given token against every configured one), only read from that header, never from the
query string (which access logs record), and never logged.
"""
from __future__ import annotations

import logging

from fastapi import HTTPException, Request

from cloud.api.tokens import Principal, TokenBook, read_tokens_file

log = logging.getLogger(__name__)

SCHEME = "Bearer"

__all__ = ["Principal", "TokenBook", "actor", "check_token", "read_tokens_file", "require_token"]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": SCHEME})


def check_token(book: TokenBook, header: str | None) -> Principal:
    """The principal of ``header`` (``Bearer <token>``); 401 otherwise."""
    if not book:
        raise _unauthorized("the HTTP API has no token configured: set http.token (HARKEN_COLLECTOR_HTTP_TOKEN_FILE) "
                            "or http_tokens_file in the collector configuration and restart it")
    if not header:
        raise _unauthorized("missing Authorization header: send 'Authorization: Bearer <token>' "
                            "with the collector's http.token")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != SCHEME.lower() or not given.strip():
        raise _unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    who = book.find(given.strip())
    if who is None:
        raise _unauthorized("invalid token: use the collector's http.token or a token of http_tokens_file")
    return who


def require_token(request: Request) -> Principal:
    """FastAPI dependency: the app's tokens live on ``app.state.tokens``; the role must allow the method."""
    try:
        who = check_token(request.app.state.tokens, request.headers.get("authorization"))
    except HTTPException:
        log.debug("rejected %s %s: bad or missing token", request.method, request.url.path)
        raise
    if not who.may(request.method):
        log.info("refused %s %s to %s (role %s)", request.method, request.url.path, who.name, who.role)
        raise HTTPException(status_code=403, detail=f"token {who.name!r} has role {who.role}: it may only read; "
                                                     "use a token with role operate")
    request.state.principal = who
    return who


def actor(request: Request) -> str:
    """The name the audit log records for this request (set by ``require_token``)."""
    who = getattr(request.state, "principal", None)
    return who.name if who is not None else "unknown"
