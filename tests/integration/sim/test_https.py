"""`https: true`: TLS on the RPC address, cert from MM_CERT_PATH or self-signed (facts 1.7)."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kdf_remote.sim.harness import RunningSim, spawn_sim, start_sim

pytestmark = pytest.mark.integration

ConfigFactory = Callable[..., dict[str, object]]


def _version_over_tls(sim: RunningSim, context: ssl.SSLContext) -> object:
    connection = http.client.HTTPSConnection(sim.host, sim.port, timeout=30, context=context)
    try:
        connection.request("POST", "/", body=b'{"method":"version"}')
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def _write_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "my-cert.pem", directory / "my-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_self_signed_when_no_certificate(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """No cert.pem: KDF's log line, then TLS with a self-signed cert carrying alt_names."""
    with start_sim(sim_config(https=True), cwd=tmp_path) as sim:
        assert sim.wait_stderr(r'No certificate found at ".*cert\.pem", generating a self-signed')
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        body = _version_over_tls(sim, context)
        assert isinstance(body, dict)
        assert body["result"] == "2.5.1-beta_kdfsim0"
        pem = ssl.get_server_certificate((sim.host, sim.port))
        cert = x509.load_pem_x509_certificate(pem.encode())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in sans.get_values_for_type(x509.DNSName)


def test_certificate_from_env(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """MM_CERT_PATH / MM_CERT_KEY_PATH are served and verify against that certificate."""
    cert_path, key_path = _write_cert(tmp_path)
    env = {**os.environ, "MM_CERT_PATH": str(cert_path), "MM_CERT_KEY_PATH": str(key_path)}
    with start_sim(sim_config(https=True), env=env, cwd=tmp_path) as sim:
        context = ssl.create_default_context(cafile=str(cert_path))
        body = _version_over_tls(sim, context)
        assert isinstance(body, dict)
        assert body["result"] == "2.5.1-beta_kdfsim0"
        assert "No certificate found" not in sim.stderr_text()


def test_unreadable_key_panics(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """A certificate that exists with a broken key is a panic: exit 101."""
    cert_path, _ = _write_cert(tmp_path)
    bad_key = tmp_path / "bad-key.pem"
    bad_key.write_text("not a key")
    env = {**os.environ, "MM_CERT_PATH": str(cert_path), "MM_CERT_KEY_PATH": str(bad_key)}
    with spawn_sim(sim_config(https=True), env=env, cwd=tmp_path) as sim:
        assert sim.wait_exit() == 101
        assert "panicked at" in sim.stdout_text()
