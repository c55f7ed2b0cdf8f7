"""Damaged, unsigned and re-signed variants of a valid bundle, and chunked delivery helpers.

Each variant fails exactly one of the installer's checks, so a test can tell which check
refused it.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile

from shared.bundle import MANIFEST, MODEL, RESERVED, SIGNATURE, build_bundle
from shared.codec import encode


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def rezip(parts: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in parts.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def tampered(data: bytes) -> bytes:
    """The model bytes changed after signing (manifest and signature intact)."""
    parts = members(data)
    model = bytearray(parts[MODEL])
    model[len(model) // 2] ^= 0xFF
    parts[MODEL] = bytes(model)
    return rezip(parts)


def unsigned(data: bytes) -> bytes:
    parts = members(data)
    del parts[SIGNATURE]
    return rezip(parts)


def resigned(data: bytes, private_key, edit=None) -> bytes:
    """Rebuilt and signed with ``private_key``, after ``edit(manifest)`` if given."""
    parts = members(data)
    manifest = json.loads(parts[MANIFEST])
    if edit is not None:
        edit(manifest)
    extras = {k: v for k, v in parts.items() if k not in RESERVED}  # a new manifest: any release is void
    return build_bundle(parts[MODEL], manifest, private_key, extras)


def wrong_expectations(data: bytes, private_key) -> bytes:
    """Validly signed, but its test vectors expect other probabilities: the smoke test fails."""
    def edit(manifest):
        for want in manifest["test_vectors"]["expected"]:
            want["probabilities"] = [min(1.0, p + 0.2) for p in want["probabilities"]]
    return resigned(data, private_key, edit)


def model_sha(data: bytes) -> str:
    """The name a bundle travels and is stored under: its manifest's model sha256."""
    return json.loads(members(data)[MANIFEST])["model_sha256"]


def chunk_header(data: bytes, chunk_size: int, **changes) -> dict:
    chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)]
    return {"kind": "bundle", "sha256": model_sha(data), "size": len(data), "chunks": len(chunks),
            "chunk_size": chunk_size, "chunk_sha256": [hashlib.sha256(c).hexdigest() for c in chunks],
            "bundle_sha256": hashlib.sha256(data).hexdigest(), **changes}


def chunked(data: bytes, chunk_size: int) -> tuple[bytes, list[bytes]]:
    """(the encoded ``bundle`` header, the chunks) for delivering ``data`` in pieces."""
    chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)]
    return encode(chunk_header(data, chunk_size)), chunks
