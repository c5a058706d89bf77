"""The TLS files of the settings, checked at start-up, and the SSL contexts made from them.

Server contexts (HTTPS, DICOM-TLS) present ``tls_cert``/``tls_key``; with ``tls_ca`` they require a
client certificate signed by that CA. Client contexts (DIMSE to a ``+tls`` peer, MLLP to the EHR,
audit syslog) verify the peer and its host name against ``tls_ca`` when set, else against the
system's CAs, and present ``tls_cert``/``tls_key`` when set, for peers that require a client
certificate. TLS 1.2 is the least version offered or accepted (BCP 195, RFC 9325).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from oncopacs.errors import ConfigError
from oncopacs.settings import Settings

log = logging.getLogger(__name__)

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
EXPIRY_WARNING = timedelta(days=30)
MAX_PEM_BYTES = 1024 * 1024  # a certificate chain or key is a few KiB; more is not a PEM file
_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_ENCRYPTED_KEYS = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files: the server certificate (with its chain) and key, and the CA that clients and peers must chain to."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TlsFiles:
        """The files ``tls_cert``, ``tls_key`` and ``tls_ca`` name (not read yet: :meth:`check` does)."""
        return cls(*(Path(text) if text.strip() else None
                     for text in (settings.tls_cert, settings.tls_key, settings.tls_ca)))

    @property
    def serving(self) -> bool:
        """Whether there is a server certificate and key: HTTPS and DICOM-TLS listen."""
        return self.cert is not None and self.key is not None

    def check(self) -> None:
        """ConfigError naming the setting when a file is missing, unreadable or not PEM, the key is
        encrypted or does not match the certificate, or only one of certificate and key is set.

        Logs a warning (and goes on) when the certificate has expired or expires within 30 days,
        or the key file is readable by other users.
        """
        if (self.cert is None) != (self.key is None):
            given, missing = ("tls_cert", "tls_key") if self.cert is not None else ("tls_key", "tls_cert")
            raise ConfigError(f"setting {_name(missing)} is required with {_name(given)}: "
                              "a server certificate needs its private key")
        if self.cert is not None:
            _read_certificates("tls_cert", self.cert)
        if self.key is not None:
            _read_key("tls_key", self.key)
        if self.ca is not None:
            _read_certificates("tls_ca", self.ca)
        if self.cert is not None and self.key is not None:
            self.server_context()
            _warn_about_expiry(self.cert)
            _warn_about_key_mode(self.key)
        if self.ca is not None:
            self.client_context()

    def server_context(self, context_class: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
        """A context for a listener: presents the certificate; with a CA, requires a client certificate it signed.

        ConfigError naming the setting when a file cannot be used (:meth:`check` says more).
        """
        if self.cert is None or self.key is None:
            raise ValueError("a server context needs tls_cert and tls_key")
        context = context_class(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = MINIMUM_VERSION
        _load_chain(context, self.cert, self.key)
        if self.ca is not None:
            with _naming("tls_ca", self.ca):
                context.load_verify_locations(cafile=str(self.ca))
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_context(self) -> ssl.SSLContext:
        """A context for an outgoing link: verifies the peer's certificate and host name, presents ours if any.

        ConfigError naming the setting when a file cannot be used.
        """
        with _naming("tls_ca", self.ca):
            context = ssl.create_default_context(cafile=str(self.ca) if self.ca is not None else None)
        context.minimum_version = MINIMUM_VERSION
        if self.cert is not None and self.key is not None:
            _load_chain(context, self.cert, self.key)
        return context


_REASONS = {
    "WRONG_VERSION_NUMBER": "the other side does not speak TLS",
    "HTTP_REQUEST": "the other side does not speak TLS",
    "UNKNOWN_PROTOCOL": "the other side does not speak TLS",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the other side requires a client certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the other side does not trust our certificate's CA",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the other side refused our certificate",
    "UNSUPPORTED_PROTOCOL": "a TLS version below 1.2",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common (1.2 is the least accepted)",
    "NO_SHARED_CIPHER": "no cipher in common",
}


def describe_tls_error(exc: OSError) -> str:
    """A short reason for a failed handshake, for a log line or an error message (no library jargon where known)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return _REASONS.get(exc.reason, exc.reason.replace("_", " ").lower())
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or type(exc).__name__


def _name(setting: str) -> str:
    return f"{setting} (ONCOPACS_{setting.upper()})"


class _EncryptedKey(Exception):
    """Raised by the password callback: the key asks for a passphrase nobody is there to type."""


def _no_password() -> bytes:
    raise _EncryptedKey


def _load_chain(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(str(cert), str(key), password=_no_password)
    except _EncryptedKey:
        raise ConfigError(f"setting {_name('tls_key')}: {key} is encrypted; give an unencrypted key "
                          "(readable by OncoPACS only, mode 0600)") from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(f"setting {_name('tls_key')}: the key in {key} does not match the certificate "
                              f"in {cert} ({_name('tls_cert')})") from None
        raise ConfigError(f"settings {_name('tls_cert')} and {_name('tls_key')}: {cert} and {key} are not a "
                          f"certificate and its key ({_reason(exc)})") from None
    except OSError as exc:
        raise ConfigError(f"settings {_name('tls_cert')} and {_name('tls_key')}: cannot read {cert} or {key} "
                          f"({exc.strerror or type(exc).__name__})") from None


@contextmanager
def _naming(setting: str, path: Path | None) -> Iterator[None]:
    """Turn an SSL or file error while loading ``path`` into a ConfigError naming ``setting``."""
    try:
        yield
    except ssl.SSLError as exc:
        raise ConfigError(f"setting {_name(setting)}: {path} holds no usable certificate ({_reason(exc)})") from None
    except OSError as exc:
        raise ConfigError(f"setting {_name(setting)}: cannot read {path} ({exc.strerror or type(exc).__name__})") \
            from None


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or type(exc).__name__).replace("_", " ").lower()


def _read(setting: str, path: Path) -> bytes:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"setting {_name(setting)}: cannot read {path} ({exc.strerror or type(exc).__name__})") \
            from None
    if len(data) > MAX_PEM_BYTES:
        raise ConfigError(f"setting {_name(setting)}: {path} is larger than {MAX_PEM_BYTES // 1024} KiB, "
                          "not a PEM file")
    return data


def _read_certificates(setting: str, path: Path) -> bytes:
    data = _read(setting, path)
    if _CERTIFICATE not in data:
        raise ConfigError(f"setting {_name(setting)}: {path} is not a PEM certificate "
                          "(no '-----BEGIN CERTIFICATE-----' line)")
    return data


def _read_key(setting: str, path: Path) -> None:
    data = _read(setting, path)
    if any(marker in data for marker in _ENCRYPTED_KEYS):
        raise ConfigError(f"setting {_name(setting)}: {path} is encrypted; give an unencrypted key "
                          "(readable by OncoPACS only, mode 0600)")
    if b"PRIVATE KEY-----" not in data:
        raise ConfigError(f"setting {_name(setting)}: {path} is not a PEM private key "
                          "(no '-----BEGIN ... PRIVATE KEY-----' line)")


def _warn_about_expiry(cert: Path) -> None:
    from cryptography import x509  # only where a certificate is checked

    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError):  # ssl accepted it; its dates are just not ours to read
        return
    now = datetime.now(UTC)
    if certificate.not_valid_after_utc <= now:
        log.warning("the certificate in %s expired on %s: clients will refuse it", cert,
                    certificate.not_valid_after_utc.date())
    elif certificate.not_valid_after_utc - now < EXPIRY_WARNING:
        log.warning("the certificate in %s expires on %s", cert, certificate.not_valid_after_utc.date())
    if certificate.not_valid_before_utc > now:
        log.warning("the certificate in %s is not valid before %s", cert, certificate.not_valid_before_utc)


def _warn_about_key_mode(key: Path) -> None:
    mode = key.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("the private key %s can be read by other users (mode %o); chmod 600 it", key, mode)
