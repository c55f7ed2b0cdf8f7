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

import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request

from shared.errors import ConfigError

log = logging.getLogger(__name__)

SCHEME = "Bearer"
ROLES = ("read", "operate")
READ_METHODS = ("GET", "HEAD", "OPTIONS")
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Principal:
    """Who a request speaks for: the token's name and role."""

    name: str
    role: str

    def may(self, method: str) -> bool:
        return self.role == "operate" or method.upper() in READ_METHODS


class TokenBook:
    """The configured tokens: token → ``Principal``."""

    def __init__(self, entries: dict[str, Principal] | None = None):
        self.entries = dict(entries or {})

    def __bool__(self) -> bool:
        return bool(self.entries)

    @classmethod
    def build(cls, token: str | None = None, tokens_file: str | None = None) -> "TokenBook":
        entries = {token: Principal("operator", "operate")} if token else {}
        if tokens_file:
            for secret, who in read_tokens_file(tokens_file).items():
                if secret in entries:
                    raise ConfigError(f"{tokens_file}: token of {who.name!r} is also http_token; give each its own")
                entries[secret] = who
        return cls(entries)

    def find(self, given: str) -> Principal | None:
        found = None
        for secret, who in self.entries.items():  # no early exit: the time does not tell which one matched
            if hmac.compare_digest(given.encode(), secret.encode()):
                found = who
        return found


def read_tokens_file(path: str | Path) -> dict[str, Principal]:
    """``NAME ROLE TOKEN`` lines → {token: Principal}; ConfigError names the bad line."""
    p = Path(path).expanduser()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"http_tokens_file {str(p)!r} cannot be read ({exc}); one 'NAME ROLE TOKEN' per line") \
            from exc
    out: dict[str, Principal] = {}
    names: set[str] = set()
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        where = f"http_tokens_file {p} line {n}"
        if len(parts) != 3:
            raise ConfigError(f"{where}: expected 'NAME ROLE TOKEN', got {len(parts)} field(s)")
        name, role, token = parts
        if role not in ROLES:
            raise ConfigError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"{where}: the token of {name!r} is shorter than {MIN_TOKEN_CHARS} characters; "
                              "make one with `python -c 'import secrets; print(secrets.token_urlsafe(24))'`")
        if name in names or token in out:
            raise ConfigError(f"{where}: {name!r} or its token appears twice; each token needs its own name")
        names.add(name)
        out[token] = Principal(name, role)
    if p.stat().st_mode & 0o077:
        log.warning("http_tokens_file %s is readable by other users; chmod 600 it", p)
    return out


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
