"""API tokens: each has a name and a role; no web framework here (the config check reads them too).

    http_tokens_file: one token per line, ``NAME ROLE TOKEN``; ``#`` starts a comment
    read      every GET
    operate   every method
"""
from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ConfigError

log = logging.getLogger(__name__)

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
