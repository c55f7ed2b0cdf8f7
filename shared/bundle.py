"""The model bundle: one zip file from raw audio to decision.

Members (stored, not compressed — ONNX weights barely compress and stored members are
cheap to read):

    manifest.json   what the model is (labels, input, placement, lineage, metrics, profile,
                    test vectors) and the sha256 of every other member
    manifest.sig    detached Ed25519 signature over the exact manifest bytes
    model.onnx      raw 16 kHz audio in; label, probabilities and feature summary out
    <extra files>   e.g. test_vectors.npy, each named with its sha256 in the manifest

Manifest fields read by the agent and the collector (the model lab writes them all):

    format, name, version, created, model_sha256, files {name: sha256}
    labels [names, by class index], sample_rate, input_samples, placement ("centre"|"start")
    gate {GateConfig.to_dict()}: the VAD settings the training clips were cut with
    confidence_threshold: below it the answer is "no answer"
    opset {"": 17, "ai.onnx.ml": 3}
    io {"input": "audio", "label": "label", "probabilities": "probabilities", "features": "features"}
    feature_names, profile (see shared.profile), lineage, metrics
    test_vectors {"file": "test_vectors.npy", "expected": [{"label", "probabilities"}], "atol"}

Loading checks, in order, and raises the specific BundleError for: not a bundle, truncated,
unknown format version, missing or bad signature, a member whose bytes do not match the
manifest (tampered), an opset newer than the installed onnxruntime runs.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import (BundleError, BundleTamperedError, BundleTruncatedError, BundleVersionError,
                           NotABundleError, OpsetUnsupportedError, SignatureError)
from shared import keys as keyring
from shared.files import atomic_write  # noqa: F401  (re-exported: the bundle store writes with it)

FORMAT = "harken-bundle/1"
MANIFEST, SIGNATURE, MODEL = "manifest.json", "manifest.sig", "model.onnx"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
REQUIRED = ("format", "name", "version", "model_sha256", "labels", "sample_rate", "input_samples",
            "placement", "opset", "io")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Bundle:
    manifest: dict
    model_bytes: bytes
    signature: bytes | None
    files: dict[str, bytes] = field(default_factory=dict)
    raw: bytes = b""

    @property
    def sha256(self) -> str:
        return self.manifest["model_sha256"]

    @property
    def bundle_sha256(self) -> str:
        """Hash of the whole bundle file: the name it travels and is stored under."""
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
        if name in (MANIFEST, SIGNATURE, MODEL) or "/" in name:
            raise ValueError(f"extra file name {name!r} is reserved or not a plain name")
    manifest = dict(manifest, format=FORMAT, model_sha256=sha256_hex(model_bytes),
                    files={name: sha256_hex(data) for name, data in sorted(extra_files.items())})
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise ValueError(f"manifest lacks {missing}")
    mbytes = _manifest_bytes(manifest)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in [(MANIFEST, mbytes), (SIGNATURE, keyring.sign(private_key, mbytes)),
                           (MODEL, model_bytes), *sorted(extra_files.items())]:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # fixed: same inputs, same bytes
            zf.writestr(info, data)
    return buf.getvalue()


def write_bundle(path, model_bytes: bytes, manifest: dict, private_key, extra_files: dict[str, bytes] | None = None) -> str:
    """Build, sign and atomically write a bundle; returns the model sha256."""
    data = build_bundle(model_bytes, manifest, private_key, extra_files)
    atomic_write(path, data)
    return sha256_hex(model_bytes)


def _read_members(data: bytes, name: str) -> dict[str, bytes]:
    if data[:4] != b"PK\x03\x04":
        if len(data) == 0:
            raise BundleTruncatedError(f"{name} is empty: the download did not finish; fetch it again")
        raise NotABundleError(f"{name} is not a Harken bundle (no zip header); pass the .hkb file `harken model train` wrote")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return {info.filename: zf.read(info) for info in zf.infolist()}
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError) as exc:
        raise BundleTruncatedError(f"{name} is truncated or corrupt ({exc}); fetch it again") from exc
    except zipfile.LargeZipFile as exc:
        raise NotABundleError(f"{name} is too large to be a bundle") from exc


def _parse_manifest(members: dict[str, bytes], name: str) -> dict:
    if MANIFEST not in members:
        raise NotABundleError(f"{name} has no {MANIFEST}: it is a zip file but not a Harken bundle")
    try:
        manifest = json.loads(members[MANIFEST])
    except ValueError as exc:
        raise BundleTamperedError(f"{name}: {MANIFEST} is not valid JSON; the bundle was damaged") from exc
    if not isinstance(manifest, dict):
        raise BundleTamperedError(f"{name}: {MANIFEST} is not a JSON object")
    fmt = manifest.get("format")
    if fmt != FORMAT:
        raise BundleVersionError(f"{name} has bundle format {fmt!r}; this Harken reads {FORMAT!r} — upgrade Harken")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise BundleTamperedError(f"{name}: manifest lacks {missing}")
    return manifest


def _check_members(manifest: dict, members: dict[str, bytes], name: str) -> None:
    if MODEL not in members:
        raise BundleTruncatedError(f"{name} has no {MODEL}")
    if sha256_hex(members[MODEL]) != manifest["model_sha256"]:
        raise BundleTamperedError(f"{name}: {MODEL} does not match the manifest's sha256; the model was altered")
    for fname, digest in (manifest.get("files") or {}).items():
        if fname not in members:
            raise BundleTruncatedError(f"{name} lacks {fname}, which the manifest lists")
        if sha256_hex(members[fname]) != digest:
            raise BundleTamperedError(f"{name}: {fname} does not match the manifest's sha256")


def check_opset(manifest: dict, name: str = "bundle") -> None:
    """Refuse a model whose default-domain opset this onnxruntime cannot run."""
    from shared.runtime import max_supported_opset

    wanted = (manifest.get("opset") or {}).get("", (manifest.get("opset") or {}).get("ai.onnx"))
    supported = max_supported_opset()
    if isinstance(wanted, int) and supported is not None and wanted > supported:
        raise OpsetUnsupportedError(
            f"{name} needs ONNX opset {wanted} but the installed onnxruntime runs up to {supported}; "
            "upgrade onnxruntime on this device or export the model with a lower opset")


def load_bundle(source, public_keys: list | None, *, name: str | None = None, require_signature: bool = True) -> Bundle:
    """Read and verify a bundle from a path or bytes.

    ``public_keys``: the trusted Ed25519 public keys; with ``require_signature=False``
    (inspection only) a missing or unverifiable signature is tolerated.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), name or "<bundle bytes>"
    else:
        name = name or str(source)
        try:
            size = os.path.getsize(source)
            if size > MAX_BUNDLE_BYTES:
                raise NotABundleError(f"{name} is {size} bytes; bundles are at most {MAX_BUNDLE_BYTES}")
            data = Path(source).read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read bundle {name}: {exc.strerror or exc}") from exc
    members = _read_members(data, name)
    manifest = _parse_manifest(members, name)
    signature = members.get(SIGNATURE)
    if require_signature:
        if signature is None:
            raise SignatureError(f"{name} is not signed; sign it with `harken model train --key` or refuse it")
        try:
            keyring.verify(list(public_keys or []), members[MANIFEST], signature)
        except SignatureError as exc:
            raise SignatureError(f"{name}: {exc}") from None
    _check_members(manifest, members, name)
    check_opset(manifest, name)
    extras = {k: v for k, v in members.items() if k not in (MANIFEST, SIGNATURE, MODEL)}
    return Bundle(manifest=manifest, model_bytes=members[MODEL], signature=signature, files=extras, raw=data)
