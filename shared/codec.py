"""Wire encoding: every Harken message is a JSON object with ``kind`` and ``v``.

Bytes on the wire are either the UTF-8 JSON itself (first byte ``{``) or that JSON
compressed with zlib (first byte ``0x78``, the zlib header). Statistics windows are always
compressed (they are mostly small integers and repeat their keys); everything else is plain
JSON so it stays readable in ``mosquitto_sub``. The decoder accepts both for every kind.

JSON is written with sorted keys and no spaces, so the same message always gives the same
bytes. ``decode`` never returns None: bad input raises ``ProtocolError(code, detail)``.
"""
from __future__ import annotations

import json
import zlib

from shared.errors import ProtocolError

SCHEMA_MAJOR = 1
SCHEMA_MINOR = 0
SCHEMA_VERSION = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR}"
MAX_MESSAGE_BYTES = 256 * 1024
COMPRESSED_KINDS = frozenset({"window"})
_ZLIB_LEVEL = 9


def dumps(message: dict) -> bytes:
    return json.dumps(message, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def encode(message: dict) -> bytes:
    """Bytes for one message; stamps the schema version if the message has none."""
    if "kind" not in message:
        raise ValueError("a message needs a 'kind'")
    message = {"v": SCHEMA_VERSION, **message}
    raw = dumps(message)
    return zlib.compress(raw, _ZLIB_LEVEL) if message["kind"] in COMPRESSED_KINDS else raw


def _inflate(payload: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(payload, MAX_MESSAGE_BYTES + 1)
    except zlib.error as exc:
        raise ProtocolError("bad_zlib", f"compressed payload is corrupt ({exc}); resend it") from exc
    if len(raw) > MAX_MESSAGE_BYTES or inflater.unconsumed_tail:
        raise ProtocolError("too_large", f"decompressed message exceeds {MAX_MESSAGE_BYTES} bytes")
    if not inflater.eof:
        raise ProtocolError("bad_zlib", "compressed payload is truncated; resend it")
    return raw


def parse_version(v) -> tuple[int, int]:
    if not isinstance(v, str):
        raise ProtocolError("bad_version", f"schema version must be a 'major.minor' string, got {v!r}")
    major, _, minor = v.partition(".")
    if not (major.isascii() and minor.isascii() and major.isdigit() and minor.isdigit()):
        raise ProtocolError("bad_version", f"schema version {v!r} is not 'major.minor'")
    return int(major), int(minor)


def decode_raw(payload: bytes) -> dict:
    """Bytes → JSON object with a known major version (fields not yet validated)."""
    return parse_json(unwrap(payload))


def unwrap(payload: bytes) -> bytes:
    """Bytes on the wire → the message's JSON text (inflated if compressed), size-checked."""
    if not payload:
        raise ProtocolError("empty", "empty payload; a message is a JSON object")
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", f"payload of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return _inflate(payload) if payload[:1] == b"\x78" else payload


def parse_json(raw: bytes) -> dict:
    """A message's JSON text → JSON object with a known major version (fields not yet validated)."""
    try:
        message = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError("not_json", f"payload is not UTF-8 JSON ({exc.__class__.__name__})") from exc
    if not isinstance(message, dict):
        raise ProtocolError("not_object", "payload must be a JSON object")
    if "kind" not in message or not isinstance(message["kind"], str):
        raise ProtocolError("no_kind", "message has no string 'kind'")
    if "v" not in message:
        raise ProtocolError("no_version", "message has no schema version 'v'")
    major, _ = parse_version(message["v"])
    if major != SCHEMA_MAJOR:
        raise ProtocolError(
            "unsupported_major",
            f"schema {message['v']} is not understood by this reader (major {SCHEMA_MAJOR}); "
            "upgrade the reader or downgrade the sender",
        )
    return message
