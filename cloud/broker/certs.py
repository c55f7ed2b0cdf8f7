"""A private certificate authority for the broker: CA, server and client certificates.

Keys are ECDSA P-256 (fast to make, supported by every OpenSSL mosquitto links against).
Private keys are written with mode 0600; certificates are PEM. The server certificate names
``localhost`` and ``127.0.0.1`` and every extra host as subject alternative names, which is
what TLS clients verify (never the common name).
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_HOSTS = ("localhost", "127.0.0.1")
CA_DAYS = 3650
LEAF_DAYS = 825  # the longest leaf lifetime common TLS clients accept


@dataclass(frozen=True)
class Issued:
    """A private key and the certificate that goes with it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Harken"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def make_ca(common_name: str = "Harken broker CA", days: int = CA_DAYS) -> Issued:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (_builder(name, name, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return Issued(key, cert)


def _leaf(ca: Issued, common_name: str, usage, san: x509.SubjectAlternativeName | None,
          days: int) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (_builder(_name(common_name), ca.cert.subject, key.public_key(), days)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_agreement=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_cert_sign=False, crl_sign=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                              critical=False))
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host or any(c.isspace() or c in "/:@" for c in host):
        raise ConfigError(f"--host {host!r} is neither an IP address nor a DNS name; give e.g. 10.0.0.5 "
                          "or broker.example.org")
    return x509.DNSName(host)


def normalize_hosts(hosts: Iterable[str]) -> list[str]:
    """``localhost``, ``127.0.0.1`` and the given hosts, each once, in a stable order."""
    out: list[str] = []
    for host in (*DEFAULT_HOSTS, *hosts):
        if host and host not in out:
            _general_name(host)
            out.append(host)
    return out


def issue_server(ca: Issued, hosts: Iterable[str], days: int = LEAF_DAYS) -> Issued:
    """A TLS server certificate valid for ``localhost``, ``127.0.0.1`` and ``hosts``."""
    names = normalize_hosts(hosts)
    san = x509.SubjectAlternativeName([_general_name(h) for h in names])
    return _leaf(ca, names[0], ExtendedKeyUsageOID.SERVER_AUTH, san, days)


def issue_client(ca: Issued, name: str, days: int = LEAF_DAYS) -> Issued:
    """A TLS client certificate whose common name is ``name`` (the MQTT user under mutual TLS)."""
    return _leaf(ca, name, ExtendedKeyUsageOID.CLIENT_AUTH, None, days)


def cert_hosts(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName), *map(str, san.get_values_for_type(x509.IPAddress))]


def common_name(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_issued(issued: Issued, key_path: Path, cert_path: Path, key_mode: int = 0o600) -> None:
    """Write the key (unencrypted PEM, ``key_mode``) and the certificate (PEM, 0644)."""
    key_pem = issued.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    _write_atomic(Path(key_path), key_pem, key_mode)
    _write_atomic(Path(cert_path), issued.cert.public_bytes(serialization.Encoding.PEM), 0o644)


def load_issued(key_path: Path, cert_path: Path) -> Issued:
    """Read a key and certificate written by :func:`write_issued`."""
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read {key_path} / {cert_path}: {exc}; "
                          "re-run `harken broker init --force` to make a new CA") from exc
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if (not isinstance(key, ec.EllipticCurvePrivateKey)
            or key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki)):
        raise ConfigError(f"{key_path} does not match {cert_path}; re-run `harken broker init --force`")
    return Issued(key, cert)


def write_crl(ca: Issued, serials: Iterable[str], path: Path, days: int = CA_DAYS) -> None:
    """A certificate revocation list of the CA naming ``serials`` (hex), PEM, atomically.

    mosquitto checks client certificates against it (``crlfile``) and re-reads it on SIGHUP.
    It is valid as long as the CA, so an untouched broker never starts refusing everyone.
    """
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca.cert.subject)
               .last_update(now - dt.timedelta(minutes=5))
               .next_update(now + dt.timedelta(days=days)))
    for serial in sorted(set(serials)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(int(serial, 16)).revocation_date(now).build())
    crl = builder.sign(ca.key, hashes.SHA256())
    _write_atomic(Path(path), crl.public_bytes(serialization.Encoding.PEM), 0o644)


def serial_hex(cert_path: Path) -> str:
    """The serial number of a PEM certificate, in hex."""
    return format(x509.load_pem_x509_certificate(Path(cert_path).read_bytes()).serial_number, "x")
