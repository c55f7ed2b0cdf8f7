"""The sample directory: each sample's WAV file, named by the sha256 of its bytes.

    {root}/{sha[:2]}/{sha}.wav

A file is written once (temp, fsync, rename), so the same clip sent twice, or by two collector
replicas at once, is one file; its name is its checksum, so ``verify`` can tell a damaged one.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from shared.errors import StoreError
from shared.files import atomic_write


class SampleFiles:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()

    def path(self, sha: str) -> Path:
        return self.root / sha[:2] / f"{sha}.wav"

    def exists(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def write(self, sha: str, data: bytes) -> Path:
        """Store ``data`` under ``sha`` (which must be its sha256); an existing file is kept."""
        if hashlib.sha256(data).hexdigest() != sha:
            raise StoreError(f"refusing to store a sample under {sha[:16]}: that is not the sha256 of its bytes")
        path = self.path(sha)
        if not path.is_file():
            try:
                atomic_write(path, data)
            except OSError as exc:
                raise StoreError(f"cannot write sample {sha[:16]} under {self.root}: {exc}; check free space and "
                                 "permissions of samples_dir") from exc
        return path

    def read(self, sha: str) -> bytes:
        try:
            return self.path(sha).read_bytes()
        except OSError as exc:
            raise StoreError(f"sample file {self.path(sha)} cannot be read ({exc}); is samples_dir the collector's?"
                             ) from exc

    def verify(self, sha: str) -> bool:
        """The file exists and still hashes to its name."""
        try:
            return hashlib.sha256(self.path(sha).read_bytes()).hexdigest() == sha
        except OSError:
            return False

    def delete(self, sha: str) -> None:
        self.path(sha).unlink(missing_ok=True)
