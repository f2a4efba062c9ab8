"""The real daemon's TLS listener (uvicorn with the daemon's context), and plain HTTP refused.

Reference test 14 of style-and-security.md part B: TLS 1.0/1.1 and CBC or SHA-1 suites refused,
TLS 1.2 ECDHE-AEAD and TLS 1.3 accepted, HSTS sent, and clients fail without the pinned CA.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import httpx
import pytest

from .conftest import HANDSHAKE_TIMEOUT, legacy_client
from .harness import SecureDaemon, make_daemon

pytestmark = [pytest.mark.integration, pytest.mark.security]

ECDSA_AEAD = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
)
REFUSED_TLS12 = (
    "ECDHE-ECDSA-AES128-SHA256",  # CBC
    "ECDHE-ECDSA-AES256-SHA384",  # CBC
    "ECDHE-ECDSA-AES128-SHA",  # CBC with SHA-1
)


def _handshake(port: int, context: ssl.SSLContext, name: str = "127.0.0.1") -> tuple[str, str]:
    """Complete a handshake with the daemon; returns (version, cipher)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=HANDSHAKE_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        version, cipher = tls.version(), tls.cipher()
        assert version is not None and cipher is not None
        return version, cipher[0]


def test_tls_1_1_and_1_0_are_refused(shared_daemon: SecureDaemon) -> None:
    """Clients offering only TLS 1.0 or 1.1 (every cipher allowed) cannot connect."""
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        client = legacy_client(version=version, ciphers="ALL:@SECLEVEL=0")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _handshake(shared_daemon.port, client)


def test_cbc_and_sha1_suites_are_refused(shared_daemon: SecureDaemon) -> None:
    """TLS 1.2 clients offering only CBC (SHA-2 or SHA-1 MAC) suites cannot connect."""
    for suite in REFUSED_TLS12:
        client = legacy_client(version=ssl.TLSVersion.TLSv1_2, ciphers=f"{suite}:@SECLEVEL=0")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _handshake(shared_daemon.port, client)


def test_tls_1_2_ecdhe_aead_and_tls_1_3_are_accepted(shared_daemon: SecureDaemon) -> None:
    """Each ECDHE-ECDSA AEAD suite negotiates over TLS 1.2; TLS 1.3 works; the API answers."""
    for suite in ECDSA_AEAD:
        client = legacy_client(version=ssl.TLSVersion.TLSv1_2, ciphers=suite)
        assert _handshake(shared_daemon.port, client) == ("TLSv1.2", suite)
    tls13 = legacy_client(version=ssl.TLSVersion.TLSv1_3)
    assert _handshake(shared_daemon.port, tls13)[0] == "TLSv1.3"
    pinned = shared_daemon.context()
    pinned.maximum_version = ssl.TLSVersion.TLSv1_2
    response = httpx.get(f"{shared_daemon.url}/v1/health", verify=pinned, timeout=30)
    assert response.status_code == 200


def test_responses_carry_hsts_nosniff_and_no_server_header(shared_daemon: SecureDaemon) -> None:
    """Every response, error or not, has HSTS (2 years), nosniff, no-store, no Server header."""
    with shared_daemon.client() as http:
        for response in (http.get("/v1/health"), http.get("/v1/instances")):
            assert response.headers["strict-transport-security"] == "max-age=63072000"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["cache-control"] == "no-store"
            assert "server" not in response.headers


def test_clients_without_the_pinned_ca_or_for_another_name_fail(
    shared_daemon: SecureDaemon,
) -> None:
    """The system trust store does not know the private CA; the CA is bound to its SANs."""
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{shared_daemon.url}/v1/health", verify=ssl.create_default_context())
    pinned = shared_daemon.context()
    assert _handshake(shared_daemon.port, pinned, "localhost")[0] == "TLSv1.3"
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(shared_daemon.port, pinned, "kdf.example.com")


def test_plain_http_to_the_tls_port_reaches_no_route(shared_daemon: SecureDaemon) -> None:
    """A plain-HTTP request with a valid key on the TLS port never reaches the API."""
    url = f"http://127.0.0.1:{shared_daemon.port}/v1/instances"
    try:
        response = httpx.get(url, headers={"X-API-Key": shared_daemon.admin_key}, timeout=30)
    except httpx.HTTPError:
        return
    assert response.status_code >= 400


def test_plain_http_off_loopback_refuses_to_start(tmp_path: Path) -> None:
    """Without ``security.ssl`` the daemon only listens on loopback: 0.0.0.0 exits 1."""
    daemon = make_daemon(tmp_path / "daemon", {"daemon": {"host": "0.0.0.0"}})
    document = daemon.settings()
    del document["security"]["ssl"]
    daemon.write_settings(document)
    result = daemon.run_to_exit()
    assert result.returncode == 1
    assert "refusing to start: daemon.host: got '0.0.0.0'" in result.stderr


def test_world_readable_tls_key_refuses_to_start(tmp_path: Path) -> None:
    """A server key others can read stops the start, naming the setting."""
    daemon = make_daemon(tmp_path / "daemon")
    (daemon.root / "tls" / "server.key").chmod(0o644)
    result = daemon.run_to_exit()
    assert result.returncode == 1
    assert "security.ssl.key_path" in result.stderr and "chmod 600" in result.stderr
