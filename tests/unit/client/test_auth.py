"""The client's auth flow: API key → JWT, refresh, 404 fallback, retry on early 401, signing."""

from __future__ import annotations

import hashlib
import hmac

import httpx
import pytest

from kdf_remote.client.auth import KdfAuth, signature, signing_key

pytestmark = pytest.mark.unit

KEY = "kdfr_" + "A" * 43


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Daemon:
    """A tiny fake daemon recording what it saw."""

    def __init__(self, *, token_status: int = 200, expires_in: int = 600) -> None:
        self.token_status = token_status
        self.expires_in = expires_in
        self.issued = 0
        self.revoked: set[str] = set()
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.path == "/v1/auth/token":
            if self.token_status != 200:
                return httpx.Response(self.token_status, json={"error": "x", "detail": "y"})
            assert request.headers["Authorization"] == f"Bearer {KEY}"
            self.issued += 1
            return httpx.Response(
                200,
                json={
                    "access_token": f"jwt-{self.issued}",
                    "token_type": "Bearer",
                    "expires_in": self.expires_in,
                },
            )
        bearer = request.headers.get("Authorization", "")
        if bearer.removeprefix("Bearer ") in self.revoked:
            return httpx.Response(401, json={"error": "unauthorized", "detail": "revoked"})
        return httpx.Response(200, json={"bearer": bearer})


def client(daemon: Daemon, auth: KdfAuth) -> httpx.Client:
    return httpx.Client(
        base_url="https://daemon.test", transport=httpx.MockTransport(daemon), auth=auth
    )


def test_exchanges_once_and_reuses_token() -> None:
    """The key is exchanged for a JWT once; later requests reuse it."""
    daemon = Daemon()
    with client(daemon, KdfAuth(KEY)) as http:
        assert http.get("/v1/instances").json() == {"bearer": "Bearer jwt-1"}
        assert http.get("/v1/instances").json() == {"bearer": "Bearer jwt-1"}
    assert daemon.issued == 1


def test_refreshes_before_expiry() -> None:
    """Shortly before the token expires a new one is fetched."""
    daemon = Daemon(expires_in=300)
    clock = FakeClock()
    with client(daemon, KdfAuth(KEY, clock=clock)) as http:
        http.get("/v1/instances")
        clock.now += 250.0  # inside the 30 s refresh margin of a 300 s token
        http.get("/v1/instances")
        clock.now += 100.0
        assert http.get("/v1/instances").json() == {"bearer": "Bearer jwt-2"}
    assert daemon.issued == 2


def test_falls_back_to_api_key_without_token_endpoint() -> None:
    """A daemon answering 404 on /v1/auth/token gets the API key as Bearer from then on."""
    daemon = Daemon(token_status=404)
    auth = KdfAuth(KEY)
    with client(daemon, auth) as http:
        assert http.get("/v1/instances").json() == {"bearer": f"Bearer {KEY}"}
        http.get("/v1/instances")
    assert auth.mode == "key"
    assert sum(1 for r in daemon.seen if r.url.path == "/v1/auth/token") == 1


def test_refused_exchange_sends_key_and_tries_again_later() -> None:
    """A refused exchange (e.g. 429) does not stick: the key is sent this time only."""
    daemon = Daemon(token_status=429)
    auth = KdfAuth(KEY)
    with client(daemon, auth) as http:
        assert http.get("/v1/instances").json() == {"bearer": f"Bearer {KEY}"}
        daemon.token_status = 200
        assert http.get("/v1/instances").json() == {"bearer": "Bearer jwt-1"}


def test_early_401_fetches_new_token_once() -> None:
    """A token refused before expiry (revoked) is replaced once and the request repeated."""
    daemon = Daemon()
    with client(daemon, KdfAuth(KEY)) as http:
        http.get("/v1/instances")
        daemon.revoked.add("jwt-1")
        assert http.get("/v1/instances").json() == {"bearer": "Bearer jwt-2"}
        daemon.revoked.add("jwt-2")
        daemon.token_status = 401
        assert http.get("/v1/instances").status_code == 200  # key itself, not revoked


def test_no_exchange_mode_sends_key() -> None:
    """exchange=False sends the key as Bearer and never calls the token endpoint."""
    daemon = Daemon()
    with client(daemon, KdfAuth(KEY, exchange=False)) as http:
        assert http.get("/v1/instances").json() == {"bearer": f"Bearer {KEY}"}
    assert all(r.url.path != "/v1/auth/token" for r in daemon.seen)


def test_no_key_sends_no_authorization() -> None:
    """Without an API key nothing is added (public routes such as /v1/health)."""
    daemon = Daemon()
    with client(daemon, KdfAuth(None)) as http:
        assert http.get("/v1/health").json() == {"bearer": ""}


def test_signature_matches_canonical_string() -> None:
    """Signed requests carry headers whose HMAC the daemon can recompute from the spec."""
    daemon = Daemon()
    with client(daemon, KdfAuth(KEY, sign=True, wall_clock=lambda: 1700000000.9)) as http:
        http.post("/v1/instances/main/start?x=1", content=b'{"gui":"t"}')
    request = daemon.seen[-1]
    assert request.headers["X-KDF-Timestamp"] == "1700000000"
    nonce = request.headers["X-KDF-Nonce"]
    assert len(nonce) >= 16
    key = hmac.new(KEY.encode(), b"kdf-remote request signing v1", hashlib.sha256).digest()
    canonical = "\n".join(
        [
            "POST",
            "/v1/instances/main/start?x=1",
            "1700000000",
            nonce,
            hashlib.sha256(b'{"gui":"t"}').hexdigest(),
        ]
    )
    expected = hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()
    assert request.headers["X-KDF-Signature"] == f"v1={expected}"
    assert (
        signature(
            signing_key(KEY),
            "post",
            "/v1/instances/main/start?x=1",
            "1700000000",
            nonce,
            b'{"gui":"t"}',
        )
        == expected
    )
    token_request = next(r for r in daemon.seen if r.url.path == "/v1/auth/token")
    assert "X-KDF-Signature" in token_request.headers


async def test_async_flow_shares_logic() -> None:
    """The same flow drives the async client."""
    daemon = Daemon()
    async with httpx.AsyncClient(
        base_url="https://daemon.test", transport=httpx.MockTransport(daemon), auth=KdfAuth(KEY)
    ) as http:
        assert (await http.get("/v1/instances")).json() == {"bearer": "Bearer jwt-1"}
        daemon.revoked.add("jwt-1")
        assert (await http.get("/v1/instances")).json() == {"bearer": "Bearer jwt-2"}
