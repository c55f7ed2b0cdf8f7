"""Field samples on the wire: one captured clip = a ``sample`` header and its raw chunks.

A device that opted in uploads a clip (a 16 kHz mono 16-bit WAV file) as

    dev/{id}/sample                      the header (JSON, kind ``sample``): what the clip is, its
                                         size, chunk count and the sha256 of the file and of each chunk
    dev/{id}/sample/{sha256}/{i}         chunk i of the WAV file's bytes (raw), i = 0 .. chunks-1

all QoS 1, not retained, on the device's own topics (the broker's ACL lets a device write only
there). The header goes first, but a reader must take the pieces in any order: collector
replicas share the subscription and each gets some of them. The file's sha256 names the sample
everywhere (the collector stores the file under it, once, however often it arrives); its first
16 hex digits are the sample id people type.

Header fields (1.0): ``device``, ``sha256``, ``size_bytes``, ``chunks``, ``chunk_bytes``,
``chunk_sha256``, ``reason`` (``low_confidence`` | ``audit`` | ``alert``), ``captured_t`` (the
device's clock), ``duration_ms``; optional ``utterance``, ``model``, ``label`` and ``confidence``
(what the model said), ``alert`` and ``request`` (the collector's request it answers).
"""
from __future__ import annotations

import hashlib
import math
import re

from shared.codec import encode
from shared.errors import ProtocolError
from shared.mqtt import CHUNK_BYTES
from shared.topics import Topics

SAMPLE_VERSION = "1.0"
REASONS = ("low_confidence", "audit", "alert")
DEFAULT_CHUNK_BYTES = 64 * 1024  # what the agent sends; readers take any size up to MAX_CHUNK_BYTES
MAX_CHUNK_BYTES = CHUNK_BYTES  # the broker refuses larger packets (max_packet_size)
MAX_SAMPLE_BYTES = 16 * 1024 * 1024  # the protocol's ceiling; both sides cap far lower by setting
MAX_CHUNKS = 1024
ID_CHARS = 16
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def sample_id(sha256: str) -> str:
    """The short id of a sample: the first 16 hex digits of its file's sha256."""
    return sha256[:ID_CHARS]


def check_label(label: str) -> str:
    """A label becomes a folder name in exports: 1-64 of A-Z a-z 0-9 _ . - (not starting with . or -)."""
    if not isinstance(label, str) or not _LABEL_RE.match(label):
        raise ValueError(f"label {label!r} is not valid: use 1-64 characters from A-Z a-z 0-9 _ . - "
                         "that do not start with '.' or '-'")
    return label


def header(device: str, wav: bytes, *, reason: str, captured_t: float, duration_ms: float,
           chunk_bytes: int = DEFAULT_CHUNK_BYTES, **optional) -> dict:
    """The ``sample`` header of one clip (``optional``: utterance, model, label, confidence, alert, request)."""
    if reason not in REASONS:
        raise ValueError(f"reason {reason!r} is not one of {', '.join(REASONS)}")
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise ValueError(f"chunk_bytes {chunk_bytes} must be 1..{MAX_CHUNK_BYTES}")
    chunks = [wav[i:i + chunk_bytes] for i in range(0, len(wav), chunk_bytes)]
    msg = {"kind": "sample", "v": SAMPLE_VERSION, "device": device, "sha256": hashlib.sha256(wav).hexdigest(),
           "size_bytes": len(wav), "chunks": len(chunks), "chunk_bytes": chunk_bytes,
           "chunk_sha256": [hashlib.sha256(c).hexdigest() for c in chunks], "reason": reason,
           "captured_t": round(float(captured_t), 3), "duration_ms": round(float(duration_ms), 1)}
    msg.update({k: v for k, v in optional.items() if v is not None})
    return msg


def messages(topics: Topics, device: str, wav: bytes, meta: dict) -> list[tuple[str, bytes]]:
    """(topic, payload) of one clip: its header, then its chunks in order."""
    head = header(device, wav, **meta)
    size = head["chunk_bytes"]
    out = [(topics.sample(device), encode(head))]
    out += [(topics.sample_chunk(device, head["sha256"], i), wav[i * size:(i + 1) * size])
            for i in range(head["chunks"])]
    return out


def validate_header(m: dict) -> dict:
    """Cross-field rules of a ``sample`` header (the field types are checked by ``shared.messages``)."""
    if not _SHA_RE.match(m["sha256"]) or not all(_SHA_RE.match(s) for s in m["chunk_sha256"]):
        raise ProtocolError("bad_field", "sample.sha256 and sample.chunk_sha256 must be lowercase hex sha256")
    if not 0 < m["size_bytes"] <= MAX_SAMPLE_BYTES:
        raise ProtocolError("bad_field", f"sample.size_bytes must be 1..{MAX_SAMPLE_BYTES}")
    if not 0 < m["chunk_bytes"] <= MAX_CHUNK_BYTES:
        raise ProtocolError("bad_field", f"sample.chunk_bytes must be 1..{MAX_CHUNK_BYTES}")
    if m["chunks"] != math.ceil(m["size_bytes"] / m["chunk_bytes"]) or m["chunks"] > MAX_CHUNKS:
        raise ProtocolError("bad_field", "sample.chunks must be ceil(size_bytes / chunk_bytes), at most "
                                         f"{MAX_CHUNKS}")
    if len(m["chunk_sha256"]) != m["chunks"]:
        raise ProtocolError("bad_field", "sample.chunk_sha256 must list one hash per chunk")
    if m["reason"] not in REASONS:
        raise ProtocolError("bad_field", f"sample.reason must be one of {', '.join(REASONS)}")
    if m["duration_ms"] < 0 or (m.get("confidence") is not None and not 0 <= m["confidence"] <= 1):
        raise ProtocolError("bad_field", "sample.duration_ms must be >= 0 and sample.confidence in [0, 1]")
    return m


def check_chunk(head: dict, index: int, data: bytes) -> None:
    """A chunk fits its header: index in range, the expected length and sha256."""
    if not 0 <= index < head["chunks"]:
        raise ProtocolError("sample_chunk_index", f"chunk {index} of a {head['chunks']}-chunk sample")
    last = index == head["chunks"] - 1
    want = head["size_bytes"] - index * head["chunk_bytes"] if last else head["chunk_bytes"]
    if len(data) != want or hashlib.sha256(data).hexdigest() != head["chunk_sha256"][index]:
        raise ProtocolError("sample_chunk_corrupt", f"chunk {index} ({len(data)} bytes) does not match the "
                                                    "header's length or sha256; the device sends it again")
