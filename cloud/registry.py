"""The model registry: verified bundles stored immutably by sha256, with lineage and aliases.

    {registry_dir}/{sha256}.hkb    the bundle file, written atomically, never changed
    models                         one row per bundle: name, version, lineage, manifest
    aliases                        production, candidate, ... → a model

``sha256`` is the model's sha256 (``Bundle.sha256``): the name a bundle has on the wire,
in the device store and in windows. A model is referred to by an alias, by ``name:version``
or by a unique prefix of its sha256 (at least 6 hex digits).
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cloud.store.migrations_registry import ensure_schema, transaction
from shared import keys as keyring
from shared.bundle import Bundle, atomic_write, load_bundle, sha256_hex
from shared.errors import BundleTamperedError, ConfigError, SignatureError

log = logging.getLogger(__name__)

_HEX_RE = re.compile(r"^[0-9a-f]{6,64}$")
_ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
COLS = ("sha256", "bundle_sha256", "name", "version", "size_bytes", "path", "run_id", "dataset_hash", "parent",
        "created", "signer", "registered_t", "manifest")


@dataclass(frozen=True)
class ModelRecord:
    sha256: str
    bundle_sha256: str
    name: str
    version: str
    size_bytes: int
    path: str
    run_id: str | None
    dataset_hash: str | None
    parent: str | None
    created: str | None
    signer: str | None
    registered_t: float
    manifest: dict
    aliases: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def metrics(self) -> dict:
        return self.manifest.get("metrics") or {}

    def summary(self) -> dict:
        """The row without the manifest (for listings)."""
        d = {c: getattr(self, c) for c in COLS if c != "manifest"}
        d["aliases"] = list(self.aliases)
        d["label"] = self.label
        return d

    def as_dict(self) -> dict:
        return {**self.summary(), "manifest": self.manifest}


def lineage_of(manifest: dict) -> dict:
    """run_id, dataset_hash, parent and created from the manifest's lineage (or top level)."""
    lin = manifest.get("lineage") or {}
    pick = lambda *keys: next((str(src[k]) for src in (lin, manifest) for k in keys  # noqa: E731
                               if isinstance(src, dict) and src.get(k) not in (None, "")), None)
    return {"run_id": pick("run_id", "run"), "dataset_hash": pick("dataset_hash", "dataset_sha256"),
            "parent": pick("parent", "parent_sha256"), "created": pick("created", "created_at")}


def _signer(bundle: Bundle, public_keys: list) -> str | None:
    try:
        return keyring.public_key_id(keyring.verify(public_keys, bundle.manifest_raw, bundle.signature or b""))
    except SignatureError:
        return None


class Registry:
    """Registered models in the store, their bundle files in ``directory``."""

    def __init__(self, store, directory: str | os.PathLike, public_keys: list | None = None):
        self.store = store
        self.directory = Path(directory)
        self.public_keys = list(public_keys or [])
        ensure_schema(store)

    # -- registering ----------------------------------------------------------------------
    def register(self, source, *, now: float | None = None) -> tuple[ModelRecord, bool]:
        """Verify and store a bundle (path or bytes); returns (record, newly registered)."""
        bundle = load_bundle(source, self.public_keys)  # signature required
        existing = self._get(bundle.sha256)
        path = self.directory / f"{bundle.sha256}.hkb"
        if existing is not None:
            if bundle.bundle_sha256 != existing.bundle_sha256:
                return self._new_release(existing, bundle, path), False
            if not path.is_file():
                atomic_write(path, bundle.raw)  # the file was lost: the row still names it
            return existing, False
        clash = self._by_label(bundle.manifest["name"], str(bundle.manifest["version"]))
        if clash is not None:
            raise ConfigError(f"{clash.label} is already registered as model {clash.sha256[:12]}; "
                              "give the new bundle a new version")
        atomic_write(path, bundle.raw)
        lin = lineage_of(bundle.manifest)
        row = (bundle.sha256, bundle.bundle_sha256, bundle.manifest["name"], str(bundle.manifest["version"]),
               len(bundle.raw), str(path), lin["run_id"], lin["dataset_hash"], lin["parent"], lin["created"],
               _signer(bundle, self.public_keys), time.time() if now is None else now,
               json.dumps(bundle.manifest, sort_keys=True))
        with transaction(self.store) as cur:
            cur.execute(f"INSERT INTO models ({', '.join(COLS)}) VALUES ({','.join('?' * len(COLS))})"
                        " ON CONFLICT (sha256) DO NOTHING", row)
        log.info("registered model %s as %s (%d bytes)", bundle.sha256[:12], self._get(bundle.sha256).label,
                 len(bundle.raw))
        return self._get(bundle.sha256), True

    def _new_release(self, existing: ModelRecord, bundle: Bundle, path: Path) -> ModelRecord:
        """The registered model again, with a (new) release: the stored file is replaced, the model stays."""
        if bundle.release is None or bundle.manifest != existing.manifest:
            raise ConfigError(f"model {existing.sha256[:12]} is registered as {existing.label} from other bundle "
                              "bytes; register its released bundle (`harken model release`) or give a new model "
                              "a new version")
        atomic_write(path, bundle.raw)
        with transaction(self.store) as cur:
            cur.execute("UPDATE models SET bundle_sha256 = ?, size_bytes = ? WHERE sha256 = ?",
                        (bundle.bundle_sha256, len(bundle.raw), existing.sha256))
        log.info("model %s (%s): stored its new release (%s)", existing.sha256[:12], existing.label,
                 bundle.bundle_sha256[:12])
        return self._get(existing.sha256)

    # -- reading ----------------------------------------------------------------------------
    def _rows(self, where: str = "", params: tuple = ()) -> list[ModelRecord]:
        with transaction(self.store) as cur:
            rows = cur.execute(f"SELECT {', '.join(COLS)} FROM models {where} ORDER BY registered_t, sha256",
                               params).fetchall()
            aliases: dict[str, list[str]] = {}
            for name, sha in cur.execute("SELECT name, sha256 FROM aliases ORDER BY name").fetchall():
                aliases.setdefault(sha, []).append(name)
        out = []
        for r in rows:
            d = dict(zip(COLS, r))
            d["manifest"] = json.loads(d["manifest"])
            out.append(ModelRecord(**d, aliases=tuple(aliases.get(d["sha256"], ()))))
        return out

    def _get(self, sha: str) -> ModelRecord | None:
        rows = self._rows("WHERE sha256 = ?", (sha,))
        return rows[0] if rows else None

    def _by_label(self, name: str, version: str) -> ModelRecord | None:
        rows = self._rows("WHERE name = ? AND version = ?", (name, version))
        return rows[0] if rows else None

    def list(self) -> list[ModelRecord]:
        return self._rows()

    def aliases(self) -> dict[str, str]:
        with transaction(self.store) as cur:
            return dict(cur.execute("SELECT name, sha256 FROM aliases ORDER BY name").fetchall())

    def resolve(self, ref: str) -> ModelRecord:
        """A model by alias, ``name:version`` or sha256 prefix; ConfigError says what exists."""
        ref = (ref or "").strip()
        sha = self.aliases().get(ref)
        if sha is not None:
            return self._get(sha)
        if ":" in ref:
            name, _, version = ref.partition(":")
            found = self._by_label(name, version)
            if found is not None:
                return found
        elif _HEX_RE.match(ref):
            matches = [m for m in self.list() if m.sha256.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ConfigError(f"{ref!r} matches {len(matches)} models; give more digits of the sha256")
        known = ", ".join(m.label for m in self.list()[-5:]) or "none registered yet"
        raise ConfigError(f"no model {ref!r}: use an alias, name:version or a sha256 prefix of >= 6 digits "
                          f"(recent: {known}); register bundles with `harken model register`")

    def get(self, ref: str) -> ModelRecord | None:
        """Like ``resolve``, but None when nothing matches (for lookups that may miss)."""
        try:
            return self.resolve(ref)
        except ConfigError:
            return None

    def bundle(self, ref: str) -> Bundle:
        """The stored bundle of a model, verified again (sha256 and signature)."""
        rec = self.resolve(ref)
        bundle = load_bundle(rec.path, self.public_keys)
        if bundle.sha256 != rec.sha256 or sha256_hex(bundle.raw) != rec.bundle_sha256:
            raise BundleTamperedError(f"{rec.path} no longer matches model {rec.sha256[:12]}; restore it with "
                                      "`harken model register` from the original bundle")
        return bundle

    # -- aliases -----------------------------------------------------------------------------
    def set_alias(self, name: str, ref: str, *, now: float | None = None) -> ModelRecord:
        if not _ALIAS_RE.match(name) or _HEX_RE.match(name) or ":" in name:
            raise ConfigError(f"alias {name!r} must start with a letter, use A-Z a-z 0-9 _ . - and not look "
                              "like a sha256")
        rec = self.resolve(ref)
        with transaction(self.store) as cur:
            row = cur.execute("SELECT sha256 FROM aliases WHERE name = ?", (name,)).fetchone()
            cur.execute("INSERT INTO aliases (name, sha256, previous, updated_t) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, previous = excluded.previous,"
                        " updated_t = excluded.updated_t",
                        (name, rec.sha256, row[0] if row else None, time.time() if now is None else now))
        log.info("alias %s → %s (%s)", name, rec.sha256[:12], rec.label)
        return self._get(rec.sha256)
