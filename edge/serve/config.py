"""``harken serve``'s configuration: the agent's settings (it is a device) plus its HTTP front.

``ServeConfig`` extends ``AgentConfig``: device id, broker, TLS, trust keys, state directory,
automation level and VAD settings mean what they mean for an agent; ``http_*`` settings bound
the HTTP server; ``shadow`` names a bundle to run beside the active one. A TOML table
``[http]`` holds the ``http_*`` keys; the environment prefix is ``HARKEN_SERVE_``.

``window_s`` is wall-clock time here: a serve process has no microphone, so a window holds the
audio of the requests that arrived during it (``duration_s`` is that audio's length).
The bearer token comes from ``http_token_file`` (its first line; a file readable by others is
warned about), or from ``http_token`` as the collector's does: a flag shows in ``ps``, so prefer the file.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from edge.config import AgentConfig
from shared.config import load_config, secret_file, setting
from shared.errors import ConfigError
from shared.messages import AUTOMATION_LEVELS

ENV_PREFIX = "HARKEN_SERVE_"
MIN_TOKEN_CHARS = 16
TOKEN_HINT = ("write one with: python -c 'import secrets; print(secrets.token_urlsafe(32))' > serve.token; "
              "chmod 600 serve.token")
# agent settings a serve process does not use (it has no audio source of its own)
UNUSED_AGENT_SETTINGS = ("source", "realtime", "chunk_samples", "feedback_path")


@dataclass
class ServeConfig(AgentConfig):
    automation: str = setting("partial", "What the served decisions do (desired state may change it).",
                              choices=AUTOMATION_LEVELS)
    state_dir: str = setting("harken-serve", "Directory of the model store, slots file and spool.")
    shadow: str = setting("", "A bundle to run as the shadow model beside the active one (its agreement "
                          "shows in the windows); empty for none.")
    http_host: str = setting("127.0.0.1", "Address the HTTP server listens on.")
    http_port: int = setting(8090, "Port the HTTP server listens on.", ge=1, le=65535)
    http_token: str = setting("", "Bearer token clients must send; prefer http_token_file (required: one of the two).",
                              secret=True)
    http_token_file: str = secret_file("http_token", "bearer token clients must send")
    http_max_body_bytes: int = setting(8 * 1024 * 1024, "Largest request body; larger ones get 413.",
                                       ge=1024, le=1 << 30)
    http_max_audio_s: float = setting(120.0, "Longest audio in one request; longer gets 413.", ge=1.0, le=3600.0)
    http_max_pending: int = setting(16, "Requests admitted at once (one runs through the model, the rest "
                                    "wait); more get 503 with Retry-After.", ge=1, le=10000)
    http_timeout_s: float = setting(30.0, "A request's time budget (upload, wait and inference).", ge=0.1, le=3600.0)
    http_retry_after_s: int = setting(1, "Retry-After sent with a 503.", ge=1, le=3600)

    def check(self) -> None:
        super().check()
        if not self.trust_keys:
            raise ConfigError("trust_keys is empty: harken serve only runs signed bundles; pass the signer's "
                              "signing.pub with --trust-keys")
        if not self.bundle and not self.broker_url and not (self.state_path / "slots.json").is_file():
            raise ConfigError("no model to serve: give --bundle B.hkb (or a state_dir that already holds one, "
                              "or a broker_url whose desired state names one)")
        check_token(self.http_token)

    @property
    def token(self) -> str:
        return self.http_token


def serve_only_settings() -> list[str]:
    """The settings ServeConfig adds to AgentConfig or gives another default."""
    agent = {f.name: f.default for f in dataclasses.fields(AgentConfig)}
    return [f.name for f in dataclasses.fields(ServeConfig) if f.name not in agent or agent[f.name] != f.default]


def check_token(token: str) -> None:
    """ConfigError unless the token is one word of MIN_TOKEN_CHARS or more; says how to make one."""
    if not token:
        raise ConfigError(f"a bearer token is required (http_token_file): clients authenticate with it; {TOKEN_HINT}")
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError(f"the http_token must be one word of at least {MIN_TOKEN_CHARS} characters; {TOKEN_HINT}")


def load_serve_config(file: str | os.PathLike | None = None, *, env: Mapping[str, str] | None = None,
                      overrides: Mapping[str, Any] | None = None) -> ServeConfig:
    """ServeConfig from a TOML file < HARKEN_SERVE_* environment < overrides (flags)."""
    return load_config(ServeConfig, file=file, env=env, env_prefix=ENV_PREFIX, overrides=overrides)
