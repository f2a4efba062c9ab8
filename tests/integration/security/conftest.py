"""Fixtures for the security integration tests: certificates, TLS servers, real daemons."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kdf_remote.daemon.security.certs import TlsFiles, init_tls
from kdf_remote.daemon.security.files import write_private_file

from .harness import GENEROUS_LIMITS, SecureDaemon, make_daemon

HANDSHAKE_TIMEOUT = 20.0
EXPIRED_KEY = "expired-yaml-key-0123456789"


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """A CA and an ECDSA server certificate for 127.0.0.1 and localhost."""
    return init_tls(tmp_path / "tls", ["127.0.0.1", "localhost"])


@pytest.fixture
def rsa_server(tls_files: TlsFiles, tmp_path: Path) -> tuple[Path, Path]:
    """An RSA-2048 server certificate for 127.0.0.1 issued by the same CA (ECDHE-RSA suites)."""
    ca_cert = x509.load_pem_x509_certificate(Path(tls_files.ca_cert).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(tls_files.ca_key).read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa test")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "rsa.pem", tmp_path / "rsa.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private_file(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return cert_path, key_path


@asynccontextmanager
async def tls_server(context: ssl.SSLContext) -> AsyncIterator[int]:
    """A TLS server on 127.0.0.1 that answers ``ok`` after the handshake; yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"ok\n")
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(
        handle, "127.0.0.1", 0, ssl=context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


def legacy_client(
    *, version: ssl.TLSVersion, ciphers: str | None = None, maximum: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    """A client context that offers exactly ``version`` (legacy versions allowed on purpose)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        # Offering TLS 1.0/1.1 is what these tests do on purpose.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = maximum or version
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


async def handshake(
    port: int, context: ssl.SSLContext, server_hostname: str = "127.0.0.1"
) -> tuple[str, str]:
    """Connect, complete the handshake and read the greeting; returns (version, cipher)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=context,
            server_hostname=server_hostname,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        ),
        HANDSHAKE_TIMEOUT,
    )
    try:
        assert await asyncio.wait_for(reader.readline(), HANDSHAKE_TIMEOUT) == b"ok\n"
        ssl_object = writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        version, cipher = ssl_object.version(), ssl_object.cipher()
        assert version is not None and cipher is not None
        return version, cipher[0]
    finally:
        writer.close()


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureDaemon]:
    """One daemon over TLS for a whole test module (no throttling; tests must not interfere).

    Besides init's admin key it has a viewer and an operator key in the keys file, and a YAML
    key that expired in 2020. Limits on bodies, log tails and streams are small enough to test.
    """
    daemon = make_daemon(
        tmp_path_factory.mktemp("shared-daemon") / "daemon",
        {
            "security": {
                "rate_limit": GENEROUS_LIMITS,
                "api_keys": [
                    {
                        "name": "old",
                        "role": "admin",
                        "key": EXPIRED_KEY,
                        "expires": "2020-01-01T00:00:00Z",
                    }
                ],
                "max_body_size": "16K",
                "max_log_tail": 500,
                "max_streams": 2,
            }
        },
    )
    daemon.viewer_key = daemon.add_key("watcher", "viewer")
    daemon.operator_key = daemon.add_key("ops", "operator")
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
