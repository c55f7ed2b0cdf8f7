"""Release metadata: what may reach devices, signed by a release key, not by the lab's key.

The lab's key signs the manifest (provenance: this model came out of our lab). A release key
signs a small document that says a device may install it (TUF's targets role, Mender's
signed artifact header): which model, under which name and monotonic version, until when,
and how far a desired state may take it. ``harken model release`` adds it to the bundle as
``release.json`` + ``release.sig``; the model's sha256 (its name on the wire) does not change.

release.json (canonical JSON: sorted keys, no spaces)

    format            "harken-release/1"
    name              model name (the manifest's): devices keep a minimum version per name
    version           integer >= 1, never reused for a name
    model_sha256      the model it releases (the manifest's model_sha256)
    manifest_sha256   sha256 of the exact signed manifest bytes: binds it to this bundle
    issued_t          seconds since the epoch
    expires_t         a device refuses to install it at or after this time
    key_id            the release key's id (``shared.keys.public_key_id``)
    max_automation    the highest automation level a desired state may set while it runs
    probation_floor   optional {utterances, seconds, max_error_rate, latency_budget_ms}: the
                      loosest probation a desired state may ask for (absent: no looser than
                      the device's own settings)

release.sig is the Ed25519 signature over the exact release.json bytes.

A revocation list is one JSON object, the same bytes in its file and in the retained
message on ``{prefix}/model/revocations``:

    {"format": "harken-revocations/1", "document": "<canonical JSON>", "signature": "<base64>"}
    document: {"seq", "issued_t", "key_id", "models": [sha256...], "keys": [key id...]}

Devices merge every list they accept (a revocation is never undone), so a list signed with
a stolen key can add revocations but never remove one.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared import keys as keyring
from shared.bundle import Bundle, load_bundle, sha256_hex, with_release
from shared.errors import (NotReleasedError, ReleaseExpiredError, ReleaseMismatchError, ReleaseSignatureError,
                           RevocationListError, RevokedError, SignatureError)
from shared.files import atomic_write
from shared.messages import AUTOMATION_LEVELS

RELEASE_FORMAT = "harken-release/1"
REVOCATIONS_FORMAT = "harken-revocations/1"
DEFAULT_MAX_AUTOMATION = "assist"
PROBATION_KEYS = {"utterances": int, "seconds": float, "max_error_rate": float, "latency_budget_ms": float}
MAX_REVOKED = 4096
MAX_REVOCATIONS_BYTES = 512 * 1024
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_INT_LIMIT = 2 ** 63


def canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


@dataclass(frozen=True)
class Release:
    name: str
    version: int
    model_sha256: str
    manifest_sha256: str
    issued_t: float
    expires_t: float
    key_id: str
    max_automation: str = DEFAULT_MAX_AUTOMATION
    probation_floor: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} version {self.version}"

    def as_dict(self) -> dict:
        d = {"format": RELEASE_FORMAT, "name": self.name, "version": self.version,
             "model_sha256": self.model_sha256, "manifest_sha256": self.manifest_sha256,
             "issued_t": self.issued_t, "expires_t": self.expires_t, "key_id": self.key_id,
             "max_automation": self.max_automation}
        if self.probation_floor:
            d["probation_floor"] = dict(self.probation_floor)
        return d


def _number(x) -> bool:
    return (type(x) is int and abs(x) < _INT_LIMIT) or (type(x) is float and math.isfinite(x))


def _probation_floor(x) -> bool:
    return isinstance(x, dict) and all(k in PROBATION_KEYS and _number(v) and v >= 0 for k, v in x.items())


_RELEASE_FIELDS = {
    "name": lambda x: isinstance(x, str) and 0 < len(x) <= 200,
    "version": lambda x: type(x) is int and 1 <= x < _INT_LIMIT,
    "model_sha256": lambda x: isinstance(x, str) and bool(_SHA_RE.fullmatch(x)),
    "manifest_sha256": lambda x: isinstance(x, str) and bool(_SHA_RE.fullmatch(x)),
    "issued_t": _number, "expires_t": _number,
    "key_id": lambda x: isinstance(x, str) and bool(_KEY_ID_RE.fullmatch(x)),
    "max_automation": lambda x: x in AUTOMATION_LEVELS,
}


def parse_release(raw: bytes, label: str = "bundle") -> Release:
    """The release document's fields, checked for type (not for signature: see ``verify_release``)."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ReleaseMismatchError(f"{label}: release.json is not valid JSON; release the bundle again") from exc
    if not isinstance(doc, dict) or doc.get("format") != RELEASE_FORMAT:
        fmt = doc.get("format") if isinstance(doc, dict) else None
        raise ReleaseMismatchError(f"{label}: release format {str(fmt)[:40]!r} is not {RELEASE_FORMAT!r}; "
                                   "upgrade Harken or release the bundle again")
    bad = [k for k, ok in _RELEASE_FIELDS.items() if not ok(doc.get(k))]
    floor = doc.get("probation_floor", {})
    if not _probation_floor(floor):
        bad.append("probation_floor")
    if bad:
        raise ReleaseMismatchError(f"{label}: release field(s) {bad} are missing or malformed; release it again "
                                   "with `harken model release`")
    return Release(doc["name"], doc["version"], doc["model_sha256"], doc["manifest_sha256"], float(doc["issued_t"]),
                   float(doc["expires_t"]), doc["key_id"], doc["max_automation"], dict(floor))


def read_release(bundle: Bundle) -> Release | None:
    """The bundle's release as written, unverified (for listings); None without one."""
    return parse_release(bundle.release) if bundle.release is not None else None


def make_release(bundle: Bundle, private_key, *, version: int, expires_t: float, now: float | None = None,
                 max_automation: str = DEFAULT_MAX_AUTOMATION, probation_floor: dict | None = None,
                 name: str | None = None) -> tuple[bytes, bytes]:
    """(release.json, release.sig) releasing ``bundle`` under ``version`` until ``expires_t``."""
    now = time.time() if now is None else now
    release = Release(name=name or bundle.manifest["name"], version=version, model_sha256=bundle.sha256,
                      manifest_sha256=sha256_hex(bundle.manifest_raw), issued_t=round(now, 3),
                      expires_t=round(expires_t, 3), key_id=keyring.public_key_id(private_key.public_key()),
                      max_automation=max_automation, probation_floor=dict(probation_floor or {}))
    raw = canonical(release.as_dict())
    parse_release(raw)  # what we write, we can read
    return raw, keyring.sign(private_key, raw)


def release_bundle(data: bytes, bundle: Bundle, private_key, **kwargs) -> bytes:
    """Bundle bytes with a new release (see ``make_release``) in place of any earlier one."""
    return with_release(data, *make_release(bundle, private_key, **kwargs))


@dataclass(frozen=True)
class Revocations:
    """Revoked models (sha256) and release keys (key ids); merged, never shrunk."""

    models: frozenset = frozenset()
    keys: frozenset = frozenset()
    seq: int = 0

    def merged(self, other: "Revocations") -> "Revocations":
        return Revocations(self.models | other.models, self.keys | other.keys, max(self.seq, other.seq))


def _signer(release_keys: list, data: bytes, signature: bytes):
    try:
        return keyring.verify(release_keys, data, signature)
    except SignatureError:
        return None


def verify_release(bundle: Bundle, release_keys: list, *, now: float | None = None,
                   revoked: Revocations = Revocations(), label: str | None = None) -> Release:
    """The bundle's release, verified: signed by a trusted, unrevoked release key, naming this
    bundle's model, manifest and name, not expired at ``now`` (None: expiry not checked), and the
    model not revoked. Raises the specific ReleaseError."""
    label = label or f"bundle {bundle.sha256[:12]}"
    if bundle.release is None or bundle.release_signature is None:
        raise NotReleasedError(f"{label} ({bundle.manifest['name']} {bundle.manifest['version']}) is signed by the "
                               "lab only and carries no release: release it with `harken model release BUNDLE "
                               "--release-key release.key --version N --expires 30d`, or set require_release = "
                               "false on devices that may run unreleased lab bundles")
    key = _signer(list(release_keys), bundle.release, bundle.release_signature)
    if key is None:
        ids = ", ".join(keyring.public_key_id(k) for k in release_keys) or "none configured"
        raise ReleaseSignatureError(f"{label}: its release is not signed by a trusted release key (trusted: {ids}); "
                                    "release it with a key whose release.pub is in the device's release_keys")
    release = parse_release(bundle.release, label)
    key_id = keyring.public_key_id(key)
    if release.key_id != key_id:
        raise ReleaseSignatureError(f"{label}: its release names key {release.key_id} but key {key_id} signed it")
    if key_id in revoked.keys:
        raise RevokedError(f"{label}: release key {key_id} is revoked; release the model again with a current key")
    if release.model_sha256 != bundle.sha256 or release.manifest_sha256 != sha256_hex(bundle.manifest_raw):
        raise ReleaseMismatchError(f"{label}: its release is for another model or manifest; it was copied from "
                                   "another bundle, release this one with `harken model release`")
    if release.name != bundle.manifest["name"]:
        raise ReleaseMismatchError(f"{label}: released as {release.name!r} but the manifest names "
                                   f"{bundle.manifest['name']!r}")
    if bundle.sha256 in revoked.models:
        raise RevokedError(f"{label}: model {bundle.sha256[:12]} ({release.label}) is revoked; it may not run")
    if now is not None and now >= release.expires_t:
        raise ReleaseExpiredError(f"{label}: the release of {release.label} expired at {when(release.expires_t)}; "
                                  "release it again with `harken model release --expires` to install it")
    return release


# -- revocation lists ------------------------------------------------------------------------

def make_revocations(private_key, *, models=(), keys=(), seq: int, now: float | None = None) -> bytes:
    """A signed revocation list (the bytes of its file and of its retained message)."""
    bad = [m for m in models if not _SHA_RE.fullmatch(m)] + [k for k in keys if not _KEY_ID_RE.fullmatch(k)]
    if bad:
        raise ValueError(f"not a model sha256 or key id: {bad[:3]}")
    document = canonical({"seq": seq, "issued_t": round(time.time() if now is None else now, 3),
                          "key_id": keyring.public_key_id(private_key.public_key()),
                          "models": sorted(set(models)), "keys": sorted(set(keys))})
    return canonical({"format": REVOCATIONS_FORMAT, "document": document.decode(),
                      "signature": base64.b64encode(keyring.sign(private_key, document)).decode()})


def parse_revocations(payload: bytes, release_keys: list | None, *, label: str = "revocation list") -> Revocations:
    """A revocation list's contents; with ``release_keys`` its signature is verified first."""
    if len(payload) > MAX_REVOCATIONS_BYTES:
        raise RevocationListError(f"{label} is {len(payload)} bytes; at most {MAX_REVOCATIONS_BYTES}")
    try:
        outer = json.loads(payload)
        document = outer["document"].encode()
        signature = base64.b64decode(outer["signature"], validate=True)
        fmt = outer["format"]
    except (ValueError, RecursionError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise RevocationListError(f"{label} is not a signed revocation list; write it with `harken model "
                                  "revoke`") from exc
    if fmt != REVOCATIONS_FORMAT:
        raise RevocationListError(f"{label} has format {str(fmt)[:40]!r}, not {REVOCATIONS_FORMAT!r}; upgrade Harken")
    if release_keys is not None and _signer(list(release_keys), document, signature) is None:
        raise RevocationListError(f"{label} is not signed by a trusted release key; sign it with `harken model "
                                  "revoke --release-key`")
    try:
        doc = json.loads(document)
        models, revoked_keys, seq = doc["models"], doc["keys"], doc["seq"]
    except (ValueError, RecursionError, KeyError, TypeError) as exc:
        raise RevocationListError(f"{label}: its document is malformed") from exc
    ok = (isinstance(models, list) and isinstance(revoked_keys, list) and type(seq) is int and 0 <= seq < _INT_LIMIT
          and len(models) + len(revoked_keys) <= MAX_REVOKED
          and all(isinstance(m, str) and _SHA_RE.fullmatch(m) for m in models)
          and all(isinstance(k, str) and _KEY_ID_RE.fullmatch(k) for k in revoked_keys))
    if not ok:
        raise RevocationListError(f"{label}: models must be sha256s, keys 16-hex key ids, at most {MAX_REVOKED}")
    return Revocations(frozenset(models), frozenset(revoked_keys), seq)


def release_file(path, private_key, *, out=None, **kwargs) -> tuple[Release, bytes]:
    """Release the bundle file at ``path`` (see ``make_release``), written atomically to ``out``
    (default: in place); returns the release and the new bundle bytes."""
    data = Path(path).read_bytes()
    bundle = load_bundle(data, None, require_signature=False, name=str(path))
    if bundle.signature is None:
        raise SignatureError(f"{path} is not signed by the lab; sign it with `harken model train --key` first")
    released = release_bundle(data, bundle, private_key, **kwargs)
    atomic_write(out or path, released)
    return read_release(load_bundle(released, None, require_signature=False)), released
