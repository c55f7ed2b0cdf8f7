"""Ed25519 keys for signing bundles: generation, loading, signing, verification."""
from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.errors import ConfigError, SignatureError

PRIVATE_NAME = "signing.key"
PUBLIC_NAME = "signing.pub"


RELEASE_NAME = "release"  # `harken keys generate --name release`: release.key / release.pub


def generate_keypair(directory: str | os.PathLike, *, overwrite: bool = False,
                     name: str = "signing") -> tuple[Path, Path]:
    """Write ``{name}.key`` (PEM, mode 0600) and ``{name}.pub`` into ``directory``.

    The lab's key is ``signing`` (it signs manifests); a release key (``release``) signs what
    may reach devices. Keep them apart: the release key should live where releases are decided.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = d / f"{name}.key", d / f"{name}.pub"
    if priv_path.exists() and not overwrite:
        raise ConfigError(f"{priv_path} exists; pass --force to replace it (bundles signed with it stop verifying)")
    key = Ed25519PrivateKey.generate()
    priv_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the mode above applies only to a new file: an overwritten one keeps its old mode
    with os.fdopen(fd, "wb") as f:
        f.write(priv_pem)
    pub_path.write_bytes(pub_pem)
    return priv_path, pub_path


def load_private_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read signing key {path}: {exc}; create one with `harken keys generate DIR`") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key; create one with `harken keys generate DIR`")
    return key


def load_public_key(path: str | os.PathLike) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read public key {path}: {exc}; use the signing.pub that `harken keys generate` wrote") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return key


def public_key_id(key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key (first 16 hex of its raw bytes' sha256)."""
    import hashlib

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def verify(public_keys: list[Ed25519PublicKey], data: bytes, signature: bytes) -> Ed25519PublicKey:
    """Return the trusted key that signed ``data``; raise SignatureError if none did."""
    if not public_keys:
        raise SignatureError("no trusted public key configured; pass the signer's signing.pub")
    for key in public_keys:
        try:
            key.verify(signature, data)
            return key
        except InvalidSignature:
            continue
    raise SignatureError("signature does not verify with any trusted key: the bundle was altered or signed by an unknown key")
