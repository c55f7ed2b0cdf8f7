"""Typed, strict configuration: dataclasses whose fields carry a description and bounds.

Precedence is file < environment < flags. A TOML table ``[vad]`` with key
``aggressiveness`` is the field ``vad_aggressiveness``; its environment variable is
``{PREFIX}VAD_AGGRESSIVENESS``. Unknown keys anywhere are an error, values are checked
against their bounds, and cross-field rules live in the class's ``check()`` method.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from shared.errors import ConfigError

log = logging.getLogger(__name__)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def setting(default: Any, description: str, *, ge: float | None = None, le: float | None = None,
            choices: tuple | None = None, secret: bool = False, file_of: str | None = None):
    """A config field with its description and bounds (``ge``/``le`` inclusive).

    ``file_of="password"`` makes this field the path of a file that holds the secret setting
    ``password`` (``--password-file``): flags show in ``ps``, a file does not.
    """
    meta = {"description": description, "ge": ge, "le": le, "choices": choices, "secret": secret,
            "file_of": file_of}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base_type(tp) -> tuple[type, bool]:
    """(the field's concrete type, whether None is allowed)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])[0], True
    if origin is list:
        return list, False
    return tp, False


def _coerce(name: str, tp, value, from_text: bool):
    base, optional = _base_type(tp)
    if value is None or (from_text and optional and value == ""):
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if from_text and str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if from_text and str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if base is list:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                raise ValueError("expected a list")
            return [str(v) for v in value]
        if base is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError("expected a string")
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}={value!r} is not valid: {exc}") from None
    return value


def _check_bounds(cfg) -> None:
    for f in dataclasses.fields(cfg):
        v, m = getattr(cfg, f.name), f.metadata
        if v is None:
            continue
        if m.get("choices") and v not in m["choices"]:
            raise ConfigError(f"{f.name}={v!r} must be one of {', '.join(map(str, m['choices']))}")
        if m.get("ge") is not None and v < m["ge"]:
            raise ConfigError(f"{f.name}={v!r} must be >= {m['ge']}")
        if m.get("le") is not None and v > m["le"]:
            raise ConfigError(f"{f.name}={v!r} must be <= {m['le']}")


def flatten_toml(data: Mapping, prefix: str = "") -> dict:
    flat = {}
    for k, v in data.items():
        key = f"{prefix}{k}".replace("-", "_")
        if isinstance(v, Mapping):
            flat.update(flatten_toml(v, key + "_"))
        else:
            flat[key] = v
    return flat


def read_toml(path: str | os.PathLike) -> dict:
    try:
        with open(path, "rb") as f:
            return flatten_toml(tomllib.load(f))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def load_config(cls, *, file: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                env_prefix: str = "", overrides: Mapping[str, Any] | None = None):
    """Build ``cls`` from file < environment < overrides (flags), strictly."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    if file is not None:
        for k, v in read_toml(file).items():
            if k not in fields:
                raise ConfigError(f"unknown key {k!r} in {file}; known keys: {', '.join(sorted(fields))}")
            values[k] = _coerce(k, hints[k], v, from_text=False)
    env = os.environ if env is None else env
    if env_prefix:
        for k, v in env.items():
            if not k.startswith(env_prefix):
                continue
            name = k[len(env_prefix):].lower()
            if name not in fields:
                raise ConfigError(f"unknown environment variable {k}; known: "
                                  f"{', '.join(env_prefix + n.upper() for n in sorted(fields))}")
            values[name] = _coerce(name, hints[name], v, from_text=True)
    for k, v in (overrides or {}).items():
        if k not in fields:
            raise ConfigError(f"unknown setting {k!r}")
        if v is not None:
            values[k] = _coerce(k, hints[k], v, from_text=isinstance(v, str))
    try:
        cfg = cls(**values)
    except TypeError as exc:
        raise ConfigError(f"incomplete configuration: {exc}") from exc
    _check_bounds(cfg)
    read_secret_files(cfg)
    if hasattr(cfg, "check"):
        cfg.check()
    return cfg


def secret_file(target: str, what: str):
    """The ``--X-file`` twin of the secret setting ``X``: the path of a file holding it."""
    return setting("", f"File that holds the {what} (its first line); preferred to --{target.replace('_', '-')}, "
                       "which `ps` shows to every user.", file_of=target)


def read_secret(path: str | os.PathLike, name: str) -> str:
    """The first line of a secret file, stripped; ConfigError says how to fix a bad file."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name} {str(p)!r} cannot be read ({exc}); write the secret into it, mode 0600") from exc
    secret = text.splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ConfigError(f"{name} {str(p)!r} is empty; write the secret on its first line")
    if p.stat().st_mode & 0o077:
        log.warning("%s %s is readable by other users; chmod 600 it", name, p)
    return secret


def read_secret_files(cfg) -> None:
    """Fill each secret from its ``*_file`` twin; setting both is an error."""
    for f in dataclasses.fields(cfg):
        target, path = f.metadata.get("file_of"), getattr(cfg, f.name)
        if not target or not path:
            continue
        if getattr(cfg, target):
            raise ConfigError(f"both {target} and {f.name} are set; keep only {f.name}")
        setattr(cfg, target, read_secret(path, f.name))


def describe(cls) -> list[dict]:
    """One row per field: name, type, default, bounds, description (for generated docs)."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        tp = hints[f.name]
        rows.append({"name": f.name, "type": getattr(_base_type(tp)[0], "__name__", str(tp)),
                     "default": default, "description": f.metadata.get("description", ""),
                     "ge": f.metadata.get("ge"), "le": f.metadata.get("le"),
                     "choices": f.metadata.get("choices"), "secret": f.metadata.get("secret", False),
                     "file_of": f.metadata.get("file_of")})
    return rows


def redacted(cfg) -> dict:
    """The config as a dict with secrets masked, safe to log."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = "***" if (f.metadata.get("secret") and v) else v
    return out


def path_or_none(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


# -- named checks shared by the agent's and the collector's configuration -------------------
MQTT_SCHEMES = ("mqtt", "mqtts")


def check_broker_url(url: str) -> None:
    """``mqtt://host:port`` or ``mqtts://host:port``, with no credentials in it."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in MQTT_SCHEMES or not parts.hostname:
        raise ConfigError(f"broker_url {url!r} must look like mqtt://host:port or mqtts://host:port")
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"broker_url {url!r} has a bad port number") from None
    if parts.username or parts.password:
        raise ConfigError("broker_url must not carry credentials: set username and password instead")


def check_tls_files(broker_url: str, tls_ca: str, tls_cert: str, tls_key: str) -> None:
    """TLS files need mqtts://, a client certificate needs its key, and every file must exist."""
    given = {name: value for name, value in (("tls_ca", tls_ca), ("tls_cert", tls_cert), ("tls_key", tls_key))
             if value}
    if given and not broker_url.startswith("mqtts://"):
        raise ConfigError(f"{', '.join(given)} set but broker_url is not mqtts://; use mqtts:// for TLS")
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("tls_cert and tls_key go together: set both for mutual TLS, or neither")
    for name, value in given.items():
        if not Path(value).expanduser().is_file():
            raise ConfigError(f"{name} {value!r} is not a readable file")
