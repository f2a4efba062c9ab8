"""Authentication as one `httpx.Auth` flow, shared by the sync and async clients.

With an API key the flow first exchanges it for a short-lived JWT (`POST /v1/auth/token`) and
sends that as `Authorization: Bearer`, fetching a new one shortly before it expires and once more
if the daemon rejects it early (revoked, clock skew). A daemon without the token endpoint (404 or
405) gets the API key itself as Bearer from then on. With `sign=True` every request also carries
`X-KDF-Timestamp`, `X-KDF-Nonce` and `X-KDF-Signature: v1=<hex>`, an HMAC-SHA256 over
``METHOD\\nPATH[?QUERY]\\nTIMESTAMP\\nNONCE\\nsha256hex(body)`` keyed with
``HMAC-SHA256(key=api_key, msg=b"kdf-remote request signing v1")``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Literal

import httpx
import msgspec

from kdf_remote.client.models import TokenResponse

__all__ = ["KdfAuth", "sign_request", "signature", "signing_key"]

TOKEN_PATH = "/v1/auth/token"  # noqa: S105  # a URL path, not a secret
_TOKEN_MARK = "kdf_remote_token_request"  # noqa: S105  # an extension name
_SIGNING_CONTEXT = b"kdf-remote request signing v1"


def signing_key(api_key: str) -> bytes:
    """The per-key signing secret (never the API key itself on the wire)."""
    return hmac.new(api_key.encode("utf-8"), _SIGNING_CONTEXT, hashlib.sha256).digest()


def signature(key: bytes, method: str, target: str, timestamp: str, nonce: str, body: bytes) -> str:  # noqa: PLR0917  # the canonical string's five parts, in order
    """Hex HMAC-SHA256 over the canonical string of architecture.md ("Security seams")."""
    canonical = "\n".join(
        (method.upper(), target, timestamp, nonce, hashlib.sha256(body).hexdigest())
    )
    return hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).hexdigest()


def sign_request(request: httpx.Request, key: bytes, *, now: float) -> None:
    """Add the three signing headers to `request` (its body must already be read)."""
    timestamp = str(int(now))
    nonce = secrets.token_urlsafe(18)
    target = request.url.raw_path.decode("ascii")
    request.headers["X-KDF-Timestamp"] = timestamp
    request.headers["X-KDF-Nonce"] = nonce
    request.headers["X-KDF-Signature"] = "v1=" + signature(
        key, request.method, target, timestamp, nonce, request.content
    )


@dataclass(slots=True)
class _TokenState:
    mode: Literal["unknown", "jwt", "key"] = "unknown"
    token: str | None = None
    expires_at: float = 0.0


class KdfAuth(httpx.Auth):
    """API key → JWT exchange with refresh, API-key fallback and optional request signing.

    With `exchange=False` the API key itself is sent as Bearer (one-shot callers such as the CLI,
    which would otherwise spend a round trip on a token used once). `clock` is a monotonic clock
    (token expiry) and `wall_clock` the Unix time used in signatures; both injectable for tests.
    """

    requires_request_body = True

    def __init__(
        self,
        api_key: str | None,
        *,
        sign: bool = False,
        exchange: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._api_key = api_key
        self._signing_key = signing_key(api_key) if (sign and api_key) else None
        self._clock = clock
        self._wall_clock = wall_clock
        self._state = _TokenState(mode="unknown" if exchange else "key")

    @property
    def mode(self) -> str:
        """`unknown` before the first exchange, then `jwt` or `key` (the daemon has no tokens)."""
        return self._state.mode

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Authorize `request`, fetching or refreshing a token first when needed."""
        if self._api_key is None:
            yield request
            return
        if self._needs_token():
            token_response = yield self._token_request(request)
            self._absorb(token_response)
        self._authorize(request)
        response = yield request
        if response.status_code == 401 and self._state.mode == "jwt":
            # The token was refused before its expiry (revoked, daemon restarted with a new key):
            # fetch a fresh one once; a second 401 is the caller's answer.
            self._state = _TokenState()
            token_response = yield self._token_request(request)
            self._absorb(token_response)
            self._authorize(request)
            yield request

    # The token answer must be read inside the flow, but the final answer must not be (it may be
    # an SSE stream), so only responses to our own token requests are read here.
    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Drive `auth_flow`, reading only token responses."""
        request.read()
        flow = self.auth_flow(request)
        outgoing = next(flow)
        while True:
            response = yield outgoing
            if response.request.extensions.get(_TOKEN_MARK):
                response.read()
            try:
                outgoing = flow.send(response)
            except StopIteration:
                return

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Async twin of `sync_auth_flow`."""
        await request.aread()
        flow = self.auth_flow(request)
        outgoing = next(flow)
        while True:
            response = yield outgoing
            if response.request.extensions.get(_TOKEN_MARK):
                await response.aread()
            try:
                outgoing = flow.send(response)
            except StopIteration:
                return

    def _needs_token(self) -> bool:
        state = self._state
        if state.mode == "key":
            return False
        return state.token is None or self._clock() >= state.expires_at

    def _token_request(self, request: httpx.Request) -> httpx.Request:
        assert self._api_key is not None
        token_request = httpx.Request(
            "POST",
            request.url.copy_with(raw_path=TOKEN_PATH.encode("ascii")),
            headers={"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"},
            extensions={**request.extensions, _TOKEN_MARK: True},
        )
        if self._signing_key is not None:
            sign_request(token_request, self._signing_key, now=self._wall_clock())
        return token_request

    def _absorb(self, response: httpx.Response) -> None:
        status = response.status_code
        if status in (404, 405):
            self._state = _TokenState(mode="key")
            return
        if status != 200:
            # Refused or failing: send the key itself this once so the real request gets the
            # daemon's own error document; the exchange is tried again next time.
            self._state = _TokenState()
            return
        try:
            token = msgspec.json.decode(response.content, type=TokenResponse)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self._state = _TokenState(mode="key")
            return
        lifetime = max(0.0, float(token.expires_in))
        # Refresh a little early: 10 % of the lifetime, at least 5 s and at most 60 s.
        margin = min(60.0, max(5.0, lifetime * 0.1))
        self._state = _TokenState(
            mode="jwt", token=token.access_token, expires_at=self._clock() + lifetime - margin
        )

    def _authorize(self, request: httpx.Request) -> None:
        bearer = self._state.token if self._state.mode == "jwt" else self._api_key
        request.headers["Authorization"] = f"Bearer {bearer}"
        if self._signing_key is not None:
            sign_request(request, self._signing_key, now=self._wall_clock())
