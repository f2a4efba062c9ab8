"""The kdf_compat listener keeps the daemon's TLS certificate and IP allow-list."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest

from _loopback import DEADLINE_S

from .conftest import RPC_PASSWORD, CompatStack, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.security, pytest.mark.slow]

ALLOWED = "127.0.0.2"


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatStack]:
    """A TLS daemon that admits only 127.0.0.2 (its own clients bind to that address)."""
    with running_stack(
        tmp_path_factory.mktemp("compat-tls"),
        tls=True,
        allowed_ips=(f"{ALLOWED}/32",),
        source=ALLOWED,
    ) as started:
        yield started


def test_allowed_address_is_served_over_tls(secure: CompatStack) -> None:
    """From 127.0.0.2, over TLS pinned to the daemon's CA: KDF's answers, plus HSTS."""
    with secure.client(secure.compat_url, key=None) as compat:
        version = compat.post("/", content=b'{"method":"version"}')
        coins = compat.post("/", json={"method": "get_enabled_coins", "userpass": RPC_PASSWORD})
    assert version.status_code == 200
    assert "result" in version.json()
    assert coins.status_code == 200
    assert isinstance(coins.json()["result"], list)
    assert version.headers["strict-transport-security"].startswith("max-age=")


def test_other_address_is_refused(secure: CompatStack) -> None:
    """From 127.0.0.1 (not listed) the listener answers 403 and KDF is not asked."""
    with secure.client(secure.compat_url, key=None, source="127.0.0.1") as outsider:
        refused = outsider.post(
            "/", json={"method": "my_balance", "coin": "KMD", "userpass": RPC_PASSWORD}
        )
        preflight = outsider.options("/")
    assert refused.status_code == 403
    assert "error" in refused.json()
    assert preflight.status_code == 403
    assert "my_balance" not in secure.kdf_methods()


def test_plain_http_and_other_cas_are_refused(secure: CompatStack) -> None:
    """No plain HTTP on the listener; a client that does not trust the daemon's CA fails."""
    plain = f"http://127.0.0.1:{secure.compat_port}"
    transport = httpx.HTTPTransport(local_address=ALLOWED)
    with (
        httpx.Client(transport=transport, timeout=DEADLINE_S) as http,
        pytest.raises(httpx.TransportError),
    ):
        http.post(plain, content=b'{"method":"version"}')
    untrusting = httpx.HTTPTransport(local_address=ALLOWED, verify=ssl.create_default_context())
    with (
        httpx.Client(transport=untrusting, timeout=DEADLINE_S) as http,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        http.post(secure.compat_url, content=b'{"method":"version"}')


def test_listener_negotiates_modern_tls_only(secure: CompatStack) -> None:
    """TLS 1.1 is refused; TLS 1.2 and 1.3 with the daemon's certificate succeed."""
    context = ssl.create_default_context(cafile=str(secure.ca_cert))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    transport = httpx.HTTPTransport(local_address=ALLOWED, verify=context)
    with httpx.Client(transport=transport, timeout=DEADLINE_S) as http:
        assert http.options(secure.compat_url).status_code == 200
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with pytest.warns(DeprecationWarning):
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    legacy = httpx.HTTPTransport(local_address=ALLOWED, verify=old)
    with (
        httpx.Client(transport=legacy, timeout=DEADLINE_S) as http,
        pytest.raises(httpx.ConnectError),
    ):
        http.options(secure.compat_url)


def test_admin_endpoint_reports_https(secure: CompatStack) -> None:
    """The RemoteConfig values say https when the daemon serves TLS."""
    with secure.client(secure.rest_url) as admin:
        shown = admin.get("/v1/instances/main/kdf-compat").json()
    assert shown["https"] is True
    assert shown["url"] == secure.compat_url
    assert shown["port"] == secure.compat_port
