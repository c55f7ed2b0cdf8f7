"""Reassembling one bundle from the retained ``model/{sha}`` topics.

``model/{sha}`` holds either the bundle itself (a zip: first bytes ``PK\\x03\\x04``) or a
``bundle`` header message (size, chunk count, chunk size, one sha256 per chunk) whose chunks
are on ``model/{sha}/{i}``. Retained messages on different topics arrive in any order, so
chunks seen before the header are kept (bounded) and checked when it comes. Every chunk is
checked against its sha256 and the whole file against ``sha``; the signature is checked
later by the installer. River-style: ``update_*`` returns self, ``data`` is the result.
"""
from __future__ import annotations

from shared.bundle import MAX_BUNDLE_BYTES, sha256_hex
from shared.errors import BundleTamperedError, BundleTruncatedError, NotABundleError, ProtocolError
from shared.messages import decode

ZIP_MAGIC = b"PK\x03\x04"


class BundleFetch:
    """Collects the bytes of the bundle named ``sha256``."""

    def __init__(self, sha256: str, max_bytes: int = MAX_BUNDLE_BYTES):
        self.sha256 = sha256
        self.max_bytes = max_bytes
        self._header: dict | None = None
        self._chunks: dict[int, bytes] = {}
        self._buffered = 0
        self._data: bytes | None = None

    @property
    def data(self) -> bytes | None:
        """The whole, hash-checked bundle once complete; None until then."""
        return self._data

    @property
    def complete(self) -> bool:
        return self._data is not None

    @property
    def progress(self) -> tuple[int, int]:
        """(chunks received, chunks expected; 0 until the header is known)."""
        return len(self._chunks), (self._header or {}).get("chunks", 0)

    def update_model(self, payload: bytes) -> "BundleFetch":
        """The ``model/{sha}`` message: the bundle itself or a chunked-bundle header."""
        if self._data is not None or not payload:  # done already, or a cleared retained topic
            return self
        if payload[:4] == ZIP_MAGIC:
            self._finish(payload)
            return self
        try:
            header = decode(payload, expect="bundle")
        except ProtocolError as exc:
            raise NotABundleError(f"model/{self.sha256[:12]} holds neither a bundle nor a bundle header "
                                  f"({exc.code}: {exc.detail})") from exc
        self._check_header(header)
        self._header = header
        for index in list(self._chunks):
            self._check_chunk(index, self._chunks[index])
        self._try_finish()
        return self

    def update_chunk(self, index: int, payload: bytes) -> "BundleFetch":
        """Chunk ``index`` from ``model/{sha}/{index}``."""
        if self._data is not None or not payload or index in self._chunks:
            return self
        if self._header is None:
            if self._buffered + len(payload) > self.max_bytes:
                raise NotABundleError(f"chunks of {self.sha256[:12]} exceed {self.max_bytes} bytes before "
                                      "their header arrived")
            self._buffered += len(payload)
        else:
            self._check_chunk(index, payload)
        self._chunks[index] = payload
        self._try_finish()
        return self

    def _check_header(self, header: dict) -> None:
        if header["sha256"] != self.sha256:
            raise BundleTamperedError(f"the header on model/{self.sha256[:12]} names bundle "
                                      f"{header['sha256'][:12]}; the publisher mixed up topics")
        size, n, chunk_size = header["size"], header["chunks"], header["chunk_size"]
        if size > self.max_bytes:
            raise NotABundleError(f"bundle {self.sha256[:12]} is {size} bytes; at most {self.max_bytes} are accepted")
        if n == 0 or chunk_size == 0 or (n - 1) * chunk_size >= size or n * chunk_size < size:
            raise NotABundleError(f"bundle header of {self.sha256[:12]} is inconsistent: {n} chunks of "
                                  f"{chunk_size} bytes cannot hold {size} bytes")

    def _check_chunk(self, index: int, payload: bytes) -> None:
        header = self._header
        assert header is not None
        if not 0 <= index < header["chunks"]:
            raise BundleTruncatedError(f"chunk {index} of {self.sha256[:12]} is outside the header's "
                                       f"{header['chunks']} chunks")
        if sha256_hex(payload) != header["chunk_sha256"][index]:
            raise BundleTamperedError(f"chunk {index} of {self.sha256[:12]} does not match its sha256; "
                                      "it was damaged or altered in transit")

    def _try_finish(self) -> None:
        header = self._header
        if header is None or len(self._chunks) < header["chunks"]:
            return
        data = b"".join(self._chunks[i] for i in range(header["chunks"]))
        if len(data) != header["size"]:
            raise BundleTruncatedError(f"chunks of {self.sha256[:12]} add up to {len(data)} bytes, "
                                       f"the header says {header['size']}")
        self._finish(data)

    def _finish(self, data: bytes) -> None:
        whole = (self._header or {}).get("bundle_sha256")
        if isinstance(whole, str) and sha256_hex(data) != whole:
            raise BundleTamperedError(f"the bundle reassembled from model/{self.sha256[:12]} does not match "
                                      "the header's bundle_sha256; it was damaged or altered in transit")
        if len(data) > self.max_bytes:
            raise NotABundleError(f"bundle {self.sha256[:12]} is {len(data)} bytes; at most {self.max_bytes}")
        self._data = data
        self._chunks.clear()
