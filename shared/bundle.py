"""The model bundle: one zip file from raw audio to decision.

Members (stored, not compressed — ONNX weights barely compress, stored members are cheap to
read, and a stored member can never inflate into more memory than the file holds):

    manifest.json   what the model is (labels, input, placement, lineage, metrics, profile,
                    test vectors) and the sha256 of every other member
    manifest.sig    detached Ed25519 signature over the exact manifest bytes (the lab's key)
    model.onnx      raw 16 kHz audio in; label, probabilities and feature summary out
    <extra files>   e.g. test_vectors.npy, each named with its sha256 in the manifest
    release.json    optional: what may reach devices (``shared.release``), added after the lab
    release.sig     signed it by ``harken model release`` with a release key

Manifest fields read by the agent and the collector (the model lab writes them all):

    format, name, version, created, model_sha256, files {name: sha256}
    labels [names, by class index], sample_rate, input_samples, placement ("centre"|"start")
    gate {GateConfig.to_dict()}: the VAD settings the training clips were cut with
    confidence_threshold: below it the answer is "no answer"
    opset {"": 17, "ai.onnx.ml": 3}
    io {"input": "audio", "label": "label", "probabilities": "probabilities", "features": "features"}
    feature_names, profile (see shared.profile), lineage, metrics
    test_vectors {"file": "test_vectors.npy", "expected": [{"label", "probabilities"}], "atol"}

Loading is signature first and bounded (``shared.bundle_zip`` checks the zip's layout without
reading any member): the file size, then the layout, then the manifest and its signature
(each size-capped) are read and verified before the manifest is even parsed; only then are
the members the manifest lists read, and a member it does not list refuses the bundle. Each
failure raises its own BundleError (``shared.errors``): not a bundle, truncated, layout,
compressed member, over a limit, bad signature, unknown format version, malformed manifest
or member not matching it (tampered), unlisted member, opset newer than onnxruntime runs.
The release members are read here and judged by ``shared.release``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from shared.bundle_zip import ZipIndex, plain_name, write_stored_zip
from shared.errors import (BundleError, BundleLimitError, BundleTamperedError, BundleTruncatedError,
                           BundleVersionError, NotABundleError, OpsetUnsupportedError, SignatureError,
                           UnlistedMemberError)
from shared import keys as keyring
from shared.files import atomic_write  # noqa: F401  (re-exported: the bundle store writes with it)

FORMAT = "harken-bundle/1"
MANIFEST, SIGNATURE, MODEL = "manifest.json", "manifest.sig", "model.onnx"
RELEASE, RELEASE_SIGNATURE = "release.json", "release.sig"
RESERVED = (MANIFEST, SIGNATURE, MODEL, RELEASE, RELEASE_SIGNATURE)
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024  # a lab manifest is ~10 KB
MAX_SIGNATURE_BYTES = 1024  # an Ed25519 signature is 64 bytes
REQUIRED = ("format", "name", "version", "model_sha256", "labels", "sample_rate", "input_samples",
            "placement", "opset", "io")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Bundle:
    manifest: dict
    model_bytes: bytes
    signature: bytes | None
    files: dict[str, bytes] = field(default_factory=dict)
    raw: bytes = b""
    manifest_raw: bytes = b""  # the exact signed manifest bytes
    release: bytes | None = None  # release.json, unverified here (see shared.release)
    release_signature: bytes | None = None

    @property
    def sha256(self) -> str:
        return self.manifest["model_sha256"]

    @property
    def bundle_sha256(self) -> str:
        """Hash of the whole bundle file (with its release, if any)."""
        return sha256_hex(self.raw)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def input_samples(self) -> int:
        return int(self.manifest["input_samples"])

    @property
    def placement(self) -> str:
        return self.manifest["placement"]

    @property
    def confidence_threshold(self) -> float:
        return float(self.manifest.get("confidence_threshold", 0.0))

    @property
    def profile(self) -> dict | None:
        return self.manifest.get("profile")


def _manifest_bytes(manifest: dict) -> bytes:
    return json.dumps(manifest, sort_keys=True, indent=1, allow_nan=False).encode()


def build_bundle(model_bytes: bytes, manifest: dict, private_key, extra_files: dict[str, bytes] | None = None) -> bytes:
    """Bundle bytes: fills ``format``, ``model_sha256`` and ``files`` into the manifest, signs it."""
    extra_files = dict(extra_files or {})
    for name in extra_files:
        if name in RESERVED or not plain_name(name):
            raise ValueError(f"extra file name {name!r} is reserved or not a plain name")
    manifest = dict(manifest, format=FORMAT, model_sha256=sha256_hex(model_bytes),
                    files={name: sha256_hex(data) for name, data in sorted(extra_files.items())})
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise ValueError(f"manifest lacks {missing}")
    mbytes = _manifest_bytes(manifest)
    return write_stored_zip([(MANIFEST, mbytes), (SIGNATURE, keyring.sign(private_key, mbytes)),
                             (MODEL, model_bytes), *sorted(extra_files.items())])


def with_release(data: bytes, release: bytes, release_signature: bytes) -> bytes:
    """The same bundle with ``release.json``/``release.sig`` set (replacing any earlier release)."""
    index = ZipIndex.parse(data, "bundle")
    kept = [(n, index.read(n)) for n in index.names if n not in (RELEASE, RELEASE_SIGNATURE)]
    return write_stored_zip([*kept, (RELEASE, release), (RELEASE_SIGNATURE, release_signature)])


def write_bundle(path, model_bytes: bytes, manifest: dict, private_key, extra_files: dict[str, bytes] | None = None) -> str:
    """Build, sign and atomically write a bundle; returns the model sha256."""
    data = build_bundle(model_bytes, manifest, private_key, extra_files)
    atomic_write(path, data)
    return sha256_hex(model_bytes)


def _parse_manifest(raw: bytes, name: str) -> dict:
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BundleTamperedError(f"{name}: {MANIFEST} is not valid JSON; the bundle was damaged") from exc
    if not isinstance(manifest, dict):
        raise BundleTamperedError(f"{name}: {MANIFEST} is not a JSON object")
    fmt = manifest.get("format")
    if fmt != FORMAT:
        raise BundleVersionError(f"{name} has bundle format {str(fmt)[:40]!r}; this Harken reads {FORMAT!r} — "
                                 "upgrade Harken")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise BundleTamperedError(f"{name}: manifest lacks {missing}")
    _check_manifest_types(manifest, name)
    return manifest


def _check_manifest_types(m: dict, name: str) -> None:
    """The fields loading and running rely on have the types they need (a malformed manifest is refused)."""
    files = m.get("files", {})
    checks = {
        "name": isinstance(m["name"], str) and bool(m["name"]),
        "version": isinstance(m["version"], (str, int)) and not isinstance(m["version"], bool),
        "model_sha256": isinstance(m["model_sha256"], str) and bool(_SHA_RE.fullmatch(m["model_sha256"])),
        "files": isinstance(files, dict) and all(
            plain_name(k) and k not in RESERVED and isinstance(v, str) and _SHA_RE.fullmatch(v) for k, v in files.items()),
        "labels": isinstance(m["labels"], list) and bool(m["labels"]) and all(isinstance(x, str) for x in m["labels"]),
        "sample_rate": type(m["sample_rate"]) is int and m["sample_rate"] > 0,
        "input_samples": type(m["input_samples"]) is int and m["input_samples"] > 0,
        "placement": isinstance(m["placement"], str),
        "opset": isinstance(m["opset"], dict),
        "io": isinstance(m["io"], dict),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise BundleTamperedError(f"{name}: manifest field(s) {bad} have the wrong type or value; the manifest is "
                                  "malformed, rebuild the bundle with `harken model train`")


def _read_listed(index: ZipIndex, manifest: dict, name: str) -> tuple[bytes, dict[str, bytes]]:
    """Refuse members the manifest does not list, then read and hash-check the ones it does."""
    listed = {MODEL: manifest["model_sha256"], **(manifest.get("files") or {})}
    unlisted = [n for n in index.names if n not in listed and n not in RESERVED]
    if unlisted:
        raise UnlistedMemberError(f"{name} holds {unlisted[:5]}, which its signed manifest does not list: files were "
                                  "added after signing; use the bundle as the lab built it")
    members = {}
    for fname, digest in listed.items():
        if fname not in index:
            raise BundleTruncatedError(f"{name} lacks {fname}, which the manifest lists")
        data = index.read(fname)
        if sha256_hex(data) != digest:
            what = "the model" if fname == MODEL else "it"
            raise BundleTamperedError(f"{name}: {fname} does not match the manifest's sha256; {what} was altered or "
                                      "corrupted, fetch the bundle again")
        members[fname] = data
    return members.pop(MODEL), members


def check_opset(manifest: dict, name: str = "bundle") -> None:
    """Refuse a model whose default-domain opset this onnxruntime cannot run."""
    from shared.runtime import max_supported_opset

    opset = manifest.get("opset") if isinstance(manifest.get("opset"), dict) else {}
    wanted = opset.get("", opset.get("ai.onnx"))
    supported = max_supported_opset()
    if isinstance(wanted, int) and supported is not None and wanted > supported:
        raise OpsetUnsupportedError(
            f"{name} needs ONNX opset {wanted} but the installed onnxruntime runs up to {supported}; "
            "upgrade onnxruntime on this device or export the model with a lower opset")


def _read_source(source, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), name or "<bundle bytes>"
    else:
        name = name or str(source)
        try:
            size = os.path.getsize(source)
            if size > MAX_BUNDLE_BYTES:
                raise BundleLimitError(f"{name} is {size} bytes; bundles are at most {MAX_BUNDLE_BYTES}")
            data = Path(source).read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read bundle {name}: {exc.strerror or exc}") from exc
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleLimitError(f"{name} is {len(data)} bytes; bundles are at most {MAX_BUNDLE_BYTES}")
    return data, name


def _optional(index: ZipIndex, member: str, limit: int) -> bytes | None:
    return index.read(member, limit) if member in index else None


def load_bundle(source, public_keys: list | None, *, name: str | None = None, require_signature: bool = True) -> Bundle:
    """Read and verify a bundle from a path or bytes, signature first (see the module doc).

    ``public_keys``: the trusted Ed25519 public keys; with ``require_signature=False``
    (inspection only) a missing or unverifiable signature is tolerated. The release members
    are returned unverified: ``shared.release.verify_release`` judges them.
    """
    data, name = _read_source(source, name)
    index = ZipIndex.parse(data, name)
    if MANIFEST not in index:
        raise NotABundleError(f"{name} has no {MANIFEST}: it is a zip file but not a Harken bundle")
    manifest_raw = index.read(MANIFEST, MAX_MANIFEST_BYTES)
    signature = _optional(index, SIGNATURE, MAX_SIGNATURE_BYTES)
    if require_signature:
        if signature is None:
            raise SignatureError(f"{name} is not signed; sign it with `harken model train --key` or refuse it")
        try:
            keyring.verify(list(public_keys or []), manifest_raw, signature)
        except SignatureError as exc:
            raise SignatureError(f"{name}: {exc}") from None
    manifest = _parse_manifest(manifest_raw, name)
    model_bytes, files = _read_listed(index, manifest, name)
    check_opset(manifest, name)
    return Bundle(manifest=manifest, model_bytes=model_bytes, signature=signature, files=files, raw=data,
                  manifest_raw=manifest_raw, release=_optional(index, RELEASE, MAX_MANIFEST_BYTES),
                  release_signature=_optional(index, RELEASE_SIGNATURE, MAX_SIGNATURE_BYTES))
