"""Trial certificates (``oncopacs tls selfsigned``): a CA, a server certificate and key for the given
host names, and a client certificate and key, as PEM files.

The CA's private key is never written: the trial CA can vouch for these two certificates and
nothing else, and a new set replaces them all. Keys are RSA 2048 (BCP 195), signatures SHA-256.
For production, use certificates from the hospital's own CA.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from oncopacs.errors import ConfigError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
DEFAULT_DAYS = 397  # what browsers accept for a server certificate's lifetime
KEY_BITS = 2048
CLOCK_SKEW = timedelta(minutes=5)  # valid from a little before now: peers whose clocks run slow accept it
FILE_NAMES = {"ca": "ca.pem", "server_cert": "server.pem", "server_key": "server-key.pem",
              "client_cert": "client.pem", "client_key": "client-key.pem"}
_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?")


@dataclass(frozen=True, slots=True)
class TrialCertificates:
    """Where :func:`write_trial_certificates` put its PEM files, for which names, and until when they are valid."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    hosts: tuple[str, ...]
    not_after: datetime

    def env_lines(self) -> list[str]:
        """The environment for ``oncopacs serve``; the CA line, which requires client certificates, commented out."""
        return [
            f"ONCOPACS_TLS_CERT={self.server_cert}",
            f"ONCOPACS_TLS_KEY={self.server_key}",
            "# to require client certificates (signed by this CA) on HTTPS and DICOM-TLS, and to verify",
            "# outgoing TLS peers against this CA instead of the system's:",
            f"# ONCOPACS_TLS_CA={self.ca}",
        ]


def read_host_names(names: Sequence[str]) -> tuple[str, ...]:
    """``localhost``, ``127.0.0.1``, ``::1`` and ``names`` (DNS names or IP addresses), without repeats;
    ConfigError for a name that is neither."""
    found: list[str] = list(LOOPBACK_NAMES)
    for raw in names:
        name = raw.strip().lower()
        try:
            name = str(ipaddress.ip_address(name.strip("[]")))
        except ValueError:
            if len(name) > 253 or not _HOST_NAME.fullmatch(name):
                raise ConfigError(f"host {raw!r} is neither a DNS name nor an IP address") from None
            name = name.rstrip(".")
        if name not in found:
            found.append(name)
    return tuple(found)


def write_trial_certificates(folder: Path, hosts: Sequence[str] = (), *, days: int = DEFAULT_DAYS,
                             force: bool = False) -> TrialCertificates:
    """Write a trial CA, a server certificate for ``localhost``, the loopback addresses and ``hosts``,
    and a client certificate into ``folder`` (keys mode 0600).

    ConfigError when one of the files exists (unless ``force``), a host is not a name or address,
    or ``days`` is not 1-3650.
    """
    from cryptography.hazmat.primitives.asymmetric import rsa  # only when certificates are made

    if not 1 <= days <= 3650:
        raise ConfigError(f"validity of {days} days is not 1-3650")
    names = read_host_names(hosts)
    paths = {role: (folder / name).absolute() for role, name in FILE_NAMES.items()}
    existing = sorted(path.name for path in paths.values() if path.exists() or path.is_symlink())
    if existing and not force:
        raise ConfigError(f"{', '.join(existing)} already in {folder}: not overwritten (--force replaces them)")
    now = datetime.now(UTC).replace(microsecond=0)
    not_before, not_after = now - CLOCK_SKEW, now + timedelta(days=days)
    ca_key, server_key, client_key = (rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
                                      for _ in range(3))
    ca = _build_ca(ca_key, not_before, not_after)
    server = _build_leaf(ca, ca_key, server_key, names[3] if len(names) > 3 else "localhost", names,
                         not_before, not_after, server=True)
    client = _build_leaf(ca, ca_key, client_key, "oncopacs-trial-client", (), not_before, not_after, server=False)
    folder.mkdir(parents=True, exist_ok=True)
    _write(paths["ca"], _certificate_pem(ca), private=False)
    _write(paths["server_cert"], _certificate_pem(server), private=False)
    _write(paths["server_key"], _key_pem(server_key), private=True)
    _write(paths["client_cert"], _certificate_pem(client), private=False)
    _write(paths["client_key"], _key_pem(client_key), private=True)
    return TrialCertificates(paths["ca"], paths["server_cert"], paths["server_key"], paths["client_cert"],
                             paths["client_key"], names, not_after)


def _build_ca(key: RSAPrivateKey, not_before: datetime, not_after: datetime) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "OncoPACS"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "OncoPACS trial CA")])
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _build_leaf(ca: x509.Certificate, ca_key: RSAPrivateKey, key: RSAPrivateKey, common_name: str,
                names: Sequence[str], not_before: datetime, not_after: datetime, *, server: bool) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server \
        else [ExtendedKeyUsageOID.CLIENT_AUTH]  # the server's also serves as OncoPACS's client certificate
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "OncoPACS"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                                        critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _general_name(name: str) -> x509.GeneralName:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _certificate_pem(certificate: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: RSAPrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Write ``path`` anew (a link there is replaced, not followed); a key is never readable by others, even briefly."""
    mode = 0o600 if private else 0o644
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(descriptor, mode)  # whatever the umask
        file.write(data)
        file.flush()
        os.fsync(descriptor)
    os.replace(temporary, path)
