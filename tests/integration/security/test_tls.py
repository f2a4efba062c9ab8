"""The daemon's TLS context against real handshakes on loopback (Mozilla intermediate)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from kdf_remote.daemon.security.certs import TlsFiles
from kdf_remote.daemon.security.errors import SecurityConfigError
from kdf_remote.daemon.security.tls import build_server_ssl_context

from .conftest import handshake, legacy_client, tls_server

pytestmark = [pytest.mark.integration, pytest.mark.security]

ECDSA_AEAD = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
)


def _permissive(files: TlsFiles) -> ssl.SSLContext:
    """A control server accepting everything the legacy client can offer."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    server.set_ciphers("ALL:@SECLEVEL=0")
    server.load_cert_chain(files.server_cert, files.server_key)
    return server


async def test_tls_1_1_and_cbc_are_refused_where_a_permissive_server_accepts_them(
    tls_files: TlsFiles,
) -> None:
    """The same clients that reach a permissive server are refused by the daemon's context."""
    tls11 = legacy_client(version=ssl.TLSVersion.TLSv1_1, ciphers="ALL:@SECLEVEL=0")
    cbc = legacy_client(version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-SHA256")
    async with tls_server(_permissive(tls_files)) as port:
        # Control: the refusals below come from the server, not from this client's OpenSSL.
        assert (await handshake(port, tls11))[0] == "TLSv1.1"
        assert await handshake(port, cbc) == ("TLSv1.2", "ECDHE-ECDSA-AES128-SHA256")
    context = build_server_ssl_context(Path(tls_files.server_cert), Path(tls_files.server_key))
    async with tls_server(context) as port:
        for client in (tls11, cbc):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await handshake(port, client)


async def test_tls_1_2_ecdhe_aead_suites_and_tls_1_3_are_accepted(tls_files: TlsFiles) -> None:
    """Each ECDHE-ECDSA AEAD suite negotiates over TLS 1.2, and TLS 1.3 works."""
    context = build_server_ssl_context(Path(tls_files.server_cert), Path(tls_files.server_key))
    async with tls_server(context) as port:
        for suite in ECDSA_AEAD:
            client = legacy_client(version=ssl.TLSVersion.TLSv1_2, ciphers=suite)
            assert await handshake(port, client) == ("TLSv1.2", suite)
        version, _ = await handshake(port, legacy_client(version=ssl.TLSVersion.TLSv1_3))
        assert version == "TLSv1.3"


async def test_rsa_certificates_get_ecdhe_rsa_only(rsa_server: tuple[Path, Path]) -> None:
    """With an RSA key, ECDHE-RSA AEAD is accepted; static RSA and DHE key exchange are refused."""
    context = build_server_ssl_context(*rsa_server)
    async with tls_server(context) as port:
        ok = legacy_client(version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-RSA-AES256-GCM-SHA384")
        assert await handshake(port, ok, "localhost") == ("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384")
        for suite in ("AES128-GCM-SHA256", "DHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA"):
            refused = legacy_client(version=ssl.TLSVersion.TLSv1_2, ciphers=suite + ":@SECLEVEL=0")
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await handshake(port, refused, "localhost")


async def test_tls_init_certificate_verifies_with_the_pinned_ca(tls_files: TlsFiles) -> None:
    """A client pinning ca.pem accepts the server for its SANs and refuses other names."""
    context = build_server_ssl_context(Path(tls_files.server_cert), Path(tls_files.server_key))
    pinned = ssl.create_default_context(cafile=tls_files.ca_cert)
    async with tls_server(context) as port:
        assert (await handshake(port, pinned, "127.0.0.1"))[0] == "TLSv1.3"
        assert (await handshake(port, pinned, "localhost"))[0] == "TLSv1.3"
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(port, pinned, "kdf.example.com")
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(port, ssl.create_default_context(), "127.0.0.1")


def test_key_readable_by_others_is_refused(tls_files: TlsFiles) -> None:
    """The server key must be 0600."""
    key = Path(tls_files.server_key)
    key.chmod(0o644)
    with pytest.raises(SecurityConfigError, match="chmod 600"):
        build_server_ssl_context(Path(tls_files.server_cert), key)
