"""The device's model store and slots file.

    state_dir/models/{sha256}/bundle.hkb   immutable; named by the model's sha256 (``Bundle.sha256``,
                                           the name a bundle has on the wire and in the registry)
    state_dir/slots.json                   which bundle is active, previous, shadow; the
                                           probation in progress; boot id; desired rev
    state_dir/slots.prev.json              the slots file as it was before the last write

Both are written the same way: a temp file in the same directory, fsync, rename over the
target, fsync the directory. A crash at any instant leaves the old file or the new one,
never a mix. A stored bundle is re-verified (hash and signature) every time it is loaded,
so a damaged file is refused rather than run. The slots file carries a sha256 of its own
content (``check``); a file that fails it, or does not parse, is read from its previous
version instead (``SlotsFile.source`` says which was used).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from shared.bundle import Bundle, atomic_write, load_bundle
from shared.errors import BundleTamperedError, StoreError

log = logging.getLogger(__name__)

BUNDLE_NAME = "bundle.hkb"
SLOTS_VERSION = 1
BOOT_ID_LIMIT = 2 ** 63  # boot ids fit the wire's non-negative integers and a signed 64-bit column


def new_boot_id() -> int:
    """A random boot id in [1, 2^63): a reflashed device (state wiped) never repeats an old one."""
    return secrets.randbelow(BOOT_ID_LIMIT - 1) + 1


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(path: Path, data: bytes) -> None:
    """``atomic_write`` and then fsync the directory, so the rename itself is durable."""
    try:
        atomic_write(path, data)
        fsync_dir(path.parent)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}; check free space and permissions") from exc


class ModelStore:
    """Immutable bundles under ``root/models/{sha256}/``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root) / "models"

    def path(self, sha256: str) -> Path:
        return self.root / sha256 / BUNDLE_NAME

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, data: bytes, sha256: str) -> None:
        """Store verified bundle bytes under their model's sha256 (idempotent)."""
        if self.has(sha256):
            return
        directory = self.path(sha256).parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.root)
        except OSError as exc:
            raise StoreError(f"cannot create {directory}: {exc.strerror or exc}") from exc
        durable_write(self.path(sha256), data)

    def load(self, sha256: str, public_keys: list) -> Bundle:
        """Read and fully verify a stored bundle; raises the specific BundleError."""
        bundle = load_bundle(self.path(sha256), public_keys)
        if bundle.sha256 != sha256:
            raise BundleTamperedError(f"{self.path(sha256)} holds model {bundle.sha256[:12]}, not the one it "
                                      "is stored under; the store was altered")
        return bundle

    def list(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / BUNDLE_NAME).is_file())

    def remove(self, sha256: str) -> None:
        shutil.rmtree(self.path(sha256).parent, ignore_errors=True)

    def prune(self, keep: set[str]) -> list[str]:
        """Remove bundles not named in ``keep``; returns what was removed."""
        gone = [sha for sha in self.list() if sha not in keep]
        for sha in gone:
            self.remove(sha)
        return gone


@dataclass
class Probation:
    """A newly activated model under watch; ``boots`` counts starts while it lasted."""

    sha256: str
    started_t: float
    utterances: int = 0
    errors: int = 0
    boots: int = 0
    max_utterances: int = 50
    max_s: float = 600.0


@dataclass
class Slots:
    active: str | None = None
    previous: str | None = None
    shadow: str | None = None
    probation: Probation | None = None
    boot: int = 0
    desired_rev: int = 0
    automation: str | None = None
    failed: dict[str, str] = field(default_factory=dict)  # sha → why it was rolled back or refused
    last_error: str = ""
    install_crashed: dict[str, int] = field(default_factory=dict)  # sha → desired rev whose install killed us

    def to_json(self) -> bytes:
        d = dataclasses.asdict(self)
        d["version"] = SLOTS_VERSION
        d["check"] = _content_sha256(d)
        return json.dumps(d, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Slots":
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        check = d.pop("check", None)  # files written before the check existed have none
        if check is not None and check != _content_sha256(d):
            raise ValueError("its content does not match its check sum (damaged on disk)")
        if d.pop("version", None) != SLOTS_VERSION:
            raise ValueError("not a version-1 slots file")
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if d.get("probation") is not None:
            d["probation"] = Probation(**d["probation"])
        return cls(**d)


def _content_sha256(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class SlotsFile:
    """``slots.json``: read it whole, write it whole, atomically and durably; keep the version before.

    ``read`` sets ``source``: ``"slots"`` (slots.json was good), ``"new"`` (neither file exists),
    ``"previous"`` (slots.json missing or damaged: slots.prev.json was used) or ``"none"``
    (neither is readable: the caller rebuilds from the store); ``problem`` says what was wrong.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.previous_path = self.path.with_name(f"{self.path.stem}.prev{self.path.suffix}")
        self.source = "new"
        self.problem = ""
        self._last_written: bytes | None = None  # what slots.json holds, once read or written

    def read(self) -> Slots:
        slots, problem = self._read_one(self.path)
        if slots is not None:
            self.source, self.problem = "slots", ""
            return slots
        backup, backup_problem = self._read_one(self.previous_path)
        if problem == "missing" and backup_problem == "missing":
            self.source, self.problem = "new", ""
            return Slots()
        if backup is not None:
            self.source, self.problem = "previous", f"{self.path.name} {problem}; used {self.previous_path.name}"
        else:
            self.source = "none"
            self.problem = f"{self.path.name} {problem} and {self.previous_path.name} {backup_problem}"
        log.error("slots: %s", self.problem)
        return backup or Slots()

    def _read_one(self, path: Path) -> tuple[Slots | None, str]:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None, "missing"
        except OSError as exc:
            return None, f"unreadable ({exc.strerror or exc})"
        try:
            slots = Slots.from_json(raw)
        except (ValueError, TypeError) as exc:
            return None, f"damaged ({exc})"
        if path == self.path:
            self._last_written = raw
        return slots, ""

    def write(self, slots: Slots) -> None:
        """Keep what slots.json holds as slots.prev.json, then replace slots.json (both durably)."""
        data = slots.to_json()
        if data == self._last_written:
            return
        if self._last_written is not None:
            durable_write(self.previous_path, self._last_written)
        durable_write(self.path, data)
        self._last_written = data
