"""The Harken exception tree. Every error Harken raises on purpose is one of these.

    HarkenError                 base; ``str(exc)`` is one line that says how to fix it
    ├── ConfigError             a configuration file, flag or environment value is wrong
    ├── AudioError              an audio file or stream cannot be read (names the file)
    ├── ProtocolError           a wire message cannot be decoded; carries ``code``
    ├── BundleError             a model bundle cannot be used; carries ``code``
    │   ├── InstallCrashedError     the agent died while installing it (refused until a newer rev)
    │   ├── NotABundleError         not a bundle at all
    │   ├── BundleTruncatedError    cut short (a partial download)
    │   ├── BundleTamperedError     model bytes do not match the manifest's sha256
    │   ├── SignatureError          signature missing, malformed or not by a trusted key
    │   ├── BundleVersionError      bundle format version this code does not know
    │   ├── OpsetUnsupportedError   model needs a newer onnxruntime than installed
    │   ├── BundleLayoutError       the zip breaks the bundle's layout rules (duplicate or bad
    │   │                           names, overlapping members, bytes outside the zip, zip64)
    │   ├── BundleCompressedError   a member is compressed (bundles are stored zips)
    │   ├── UnlistedMemberError     a member the signed manifest does not list (appended)
    │   ├── BundleLimitError        over a cap: bundle, manifest or member size, member count
    │   └── ReleaseError            the bundle's release (what may reach devices) is unusable
    │       ├── NotReleasedError        no release metadata (signed by the lab key only)
    │       ├── ReleaseSignatureError   release not signed by a trusted release key, or altered
    │       ├── ReleaseMismatchError    release names another model, manifest or model name
    │       ├── ReleaseExpiredError     past the release's expiry
    │       ├── DowngradeError          older than the newest version this device activated
    │       ├── RevokedError            the model or the release key is on the revocation list
    │       └── RevocationListError     a revocation list cannot be used (unsigned, malformed)
    ├── ModelError              a verified model failed to load or to run
    │   └── SmokeTestError          the install-time smoke test refused it; carries ``code``
    ├── StoreError              the collector's store failed (translated from the driver)
    └── DatasetError            a dataset directory or manifest is unusable

Third-party exceptions are translated at the boundary with ``raise ... from exc``; only
the CLI turns these into a one-line message and an exit code.
"""
from __future__ import annotations


class HarkenError(Exception):
    """Base of every error Harken raises on purpose."""


class ConfigError(HarkenError):
    """A configuration value is missing, unknown, out of bounds or inconsistent."""


class AudioError(HarkenError):
    """Audio cannot be read or converted; the message names the file or stream."""


class ProtocolError(HarkenError):
    """A wire message cannot be decoded.

    ``code`` is a short stable identifier (``not_json``, ``unsupported_major`` ...) that
    the collector counts rejects by; ``detail`` says what was wrong and how to fix it.
    """

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class BundleError(HarkenError):
    """A model bundle cannot be used. ``code`` names the failure for events and counters."""

    code = "bundle_invalid"


class NotABundleError(BundleError):
    code = "not_a_bundle"


class BundleTruncatedError(BundleError):
    code = "truncated"


class BundleTamperedError(BundleError):
    code = "tampered"


class SignatureError(BundleError):
    code = "bad_signature"


class BundleVersionError(BundleError):
    code = "unknown_format_version"


class OpsetUnsupportedError(BundleError):
    code = "opset_unsupported"


class InstallCrashedError(BundleError):
    code = "install_crashed"


class BundleLayoutError(BundleError):
    code = "bad_layout"


class BundleCompressedError(BundleError):
    code = "compressed_member"


class UnlistedMemberError(BundleError):
    code = "unlisted_member"


class BundleLimitError(BundleError):
    code = "over_limit"


class ReleaseError(BundleError):
    """A bundle's release metadata refuses it on this device (``code`` names why)."""

    code = "release_invalid"


class NotReleasedError(ReleaseError):
    code = "not_released"


class ReleaseSignatureError(ReleaseError):
    code = "bad_release_signature"


class ReleaseMismatchError(ReleaseError):
    code = "release_mismatch"


class ReleaseExpiredError(ReleaseError):
    code = "release_expired"


class DowngradeError(ReleaseError):
    code = "downgrade"


class RevokedError(ReleaseError):
    code = "revoked"


class RevocationListError(ReleaseError):
    code = "bad_revocations"


class ModelError(HarkenError):
    """A verified model failed to load, warm up or run."""


class SmokeTestError(ModelError):
    """The smoke test (in a limited child process) refused the model.

    ``code``: ``smoke_test_failed``, ``smoke_test_memory``, ``smoke_test_timeout`` or
    ``smoke_test_crashed``.
    """

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


class StoreError(HarkenError):
    """The collector's store failed; the message names the store and the operation."""


class DatasetError(HarkenError):
    """A dataset directory, manifest or split is unusable."""
