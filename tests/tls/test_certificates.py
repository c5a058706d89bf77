"""Trial certificates (``oncopacs tls selfsigned``) and the checks of the configured files at start-up."""

from __future__ import annotations

import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from oncopacs.cli import main
from oncopacs.errors import ConfigError
from oncopacs.settings import Settings
from oncopacs.tls import TlsFiles
from oncopacs.tls.certificates import TrialCertificates, read_host_names, write_trial_certificates
from tests.conftest import free_port
from tests.tls.conftest import client_context, handshake, server_files


def test_trial_certificates_verify_for_every_name_and_keys_are_private(certs: TrialCertificates) -> None:
    files = server_files(certs)
    files.check()
    for name in ("localhost", "127.0.0.1", "::1", "pacs.test"):
        assert handshake(files.server_context(), client_context(certs), name) in {"TLSv1.2", "TLSv1.3"}
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(files.server_context(), client_context(certs), "elsewhere.test")
    for key in (certs.server_key, certs.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        serialization.load_pem_private_key(key.read_bytes(), password=None)  # unencrypted PEM
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "pacs.test"}
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert not (certs.ca.parent / "ca-key.pem").exists()  # the trial CA signs nothing else


def test_client_certificate_is_required_when_the_ca_is_set(certs: TrialCertificates,
                                                           stranger: TrialCertificates) -> None:
    files = server_files(certs, require_clients=True)
    assert handshake(files.server_context(), client_context(certs, with_certificate=True), "localhost")
    for client in (client_context(certs), client_context(stranger, with_certificate=True)):
        client.load_verify_locations(str(certs.ca))
        with pytest.raises((ssl.SSLError, OSError)):
            handshake(files.server_context(), client, "localhost")


def test_existing_files_are_kept_unless_forced(tmp_path: Path) -> None:
    made = write_trial_certificates(tmp_path, days=2)
    before = made.server_cert.read_bytes()
    with pytest.raises(ConfigError, match="--force"):
        write_trial_certificates(tmp_path)
    assert made.server_cert.read_bytes() == before
    again = write_trial_certificates(tmp_path, ["pacs.example.org", "10.0.0.7"], force=True)
    assert again.server_cert.read_bytes() != before and again.hosts[-2:] == ("pacs.example.org", "10.0.0.7")
    assert stat.S_IMODE(again.server_key.stat().st_mode) == 0o600


@pytest.mark.parametrize("bad", ["bad name", "-lead.example", "x" * 64 + ".example", "pacs_1.example", ""])
def test_a_host_that_is_neither_a_name_nor_an_address_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="neither a DNS name nor an IP address"):
        read_host_names([bad])


def test_cli_writes_the_files_and_prints_the_environment(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["tls", "selfsigned", "--out", str(tmp_path / "tls"), "--host", "pacs.example.org"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"ONCOPACS_TLS_CERT={tmp_path / 'tls' / 'server.pem'}" in lines
    assert f"ONCOPACS_TLS_KEY={tmp_path / 'tls' / 'server-key.pem'}" in lines
    assert f"# ONCOPACS_TLS_CA={tmp_path / 'tls' / 'ca.pem'}" in lines
    again = runner.invoke(main, ["tls", "selfsigned", "--out", str(tmp_path / "tls")])
    assert again.exit_code == 2 and "--force" in again.stderr and "Traceback" not in again.output


def bad_settings(tmp_path: Path, certs: TrialCertificates, stranger: TrialCertificates) -> dict[str, tuple]:
    """Each broken configuration, and what its message must name."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    unreadable = tmp_path / "no-such.pem"
    encrypted = tmp_path / "encrypted-key.pem"
    key = serialization.load_pem_private_key(certs.server_key.read_bytes(), password=None)
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")))
    cert, server_key = str(certs.server_cert), str(certs.server_key)
    return {
        "cert without key": ({"tls_cert": cert}, "ONCOPACS_TLS_KEY"),
        "key without cert": ({"tls_key": server_key}, "ONCOPACS_TLS_CERT"),
        "unreadable cert": ({"tls_cert": str(unreadable), "tls_key": server_key}, "ONCOPACS_TLS_CERT"),
        "cert not PEM": ({"tls_cert": str(garbage), "tls_key": server_key}, "ONCOPACS_TLS_CERT"),
        "key not PEM": ({"tls_cert": cert, "tls_key": str(garbage)}, "ONCOPACS_TLS_KEY"),
        "key of another certificate": ({"tls_cert": cert, "tls_key": str(stranger.server_key)}, "does not match"),
        "encrypted key": ({"tls_cert": cert, "tls_key": str(encrypted)}, "encrypted"),
        "CA not PEM": ({"tls_cert": cert, "tls_key": server_key, "tls_ca": str(garbage)}, "ONCOPACS_TLS_CA"),
        "unreadable CA": ({"tls_ca": str(unreadable)}, "ONCOPACS_TLS_CA"),
        "folder as cert": ({"tls_cert": str(tmp_path), "tls_key": server_key}, "ONCOPACS_TLS_CERT"),
    }


def test_each_broken_configuration_is_a_config_error_naming_the_setting(
        tmp_path: Path, certs: TrialCertificates, stranger: TrialCertificates) -> None:
    for label, (values, named) in bad_settings(tmp_path, certs, stranger).items():
        try:
            TlsFiles.from_settings(Settings(**values)).check()
        except ConfigError as exc:
            assert named in str(exc), f"{label}: {exc}"
        else:
            pytest.fail(f"{label}: no ConfigError")


def test_serve_exits_with_one_line_when_the_key_does_not_match(
        tmp_path: Path, certs: TrialCertificates, stranger: TrialCertificates) -> None:
    env = {"ONCOPACS_DATA_DIR": str(tmp_path / "data"), "ONCOPACS_HTTP_PORT": str(free_port()),
           "ONCOPACS_DICOM_PORT": str(free_port()), "ONCOPACS_DICOM_HOST": "127.0.0.1",
           "ONCOPACS_TLS_CERT": str(certs.server_cert), "ONCOPACS_TLS_KEY": str(stranger.server_key)}
    result = subprocess.run([sys.executable, "-m", "oncopacs.cli", "serve"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("oncopacs: ")]
    assert len(lines) == 1 and "ONCOPACS_TLS_KEY" in lines[0] and "does not match" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "serve.running").exists()  # nothing started


def test_tls_check_reports_the_configuration(certs: TrialCertificates, tmp_path: Path) -> None:
    env = {"ONCOPACS_TLS_CERT": str(certs.server_cert), "ONCOPACS_TLS_KEY": str(certs.server_key),
           "ONCOPACS_TLS_CA": str(certs.ca), "ONCOPACS_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["tls", "check"], env=env)
    assert result.exit_code == 0, result.output
    assert "are usable" in result.stdout and "client certificates signed by" in result.stdout
    broken = CliRunner().invoke(main, ["tls", "check"], env={**env, "ONCOPACS_TLS_KEY": ""})
    assert broken.exit_code == 2 and "ONCOPACS_TLS_KEY" in broken.stderr
