"""httpx plumbing shared by the twins: TLS context, timeouts, error translation."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from kdf_remote.client import errors
from kdf_remote.client._core import Call, HealthStreamState, RetryPolicy
from kdf_remote.client.auth import KdfAuth
from kdf_remote.client.profiles import Profile, check_url

__all__ = [
    "ClientSettings",
    "client_kwargs",
    "request_parts",
    "sse_headers",
    "ssl_context",
    "stream_timeout",
    "translate",
]

#: Long-lived streams: no read deadline for logs (they may be quiet for hours); health streams
#: get one so that a half-open connection is noticed and resumed.
HEALTH_READ_TIMEOUT = 120.0


def ssl_context(ca_pem: str | None) -> ssl.SSLContext:
    """Verification always on; with a CA PEM only that CA is trusted (pinned), else the system's.

    There is deliberately no way to turn verification off.
    """
    if ca_pem is not None:
        try:
            context = ssl.create_default_context(cadata=ca_pem)
        except ssl.SSLError as exc:
            raise errors.ConfigError(
                f"ca_cert: not a usable CA certificate: {exc}", field="ca_cert"
            ) from None
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class ClientSettings:
    """Everything a twin needs to build its httpx client, from a profile or explicit values."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        ca_pem: str | None = None,
        timeout: float = 30.0,
        sign: bool = False,
        retry: RetryPolicy | None = None,
        name: str | None = None,
        token_exchange: bool = True,
    ) -> None:
        self.url = check_url(url)
        self.api_key = api_key
        self.ca_pem = ca_pem
        self.timeout = timeout
        self.sign = sign
        self.retry = retry or RetryPolicy()
        self.name = name or self.url
        self.token_exchange = token_exchange

    @classmethod
    def from_profile(
        cls, profile: Profile, *, retry: RetryPolicy | None = None, token_exchange: bool = True
    ) -> ClientSettings:
        """Settings of a daemon profile (its CA PEM read from disk)."""
        if profile.kind != "daemon" or profile.url is None:
            raise errors.ConfigError(
                f"profile {profile.name!r} is not a daemon profile", field="kind"
            )
        return cls(
            profile.url,
            api_key=profile.api_key,
            ca_pem=profile.ca_pem(),
            timeout=profile.timeout,
            sign=profile.sign,
            retry=retry,
            name=profile.name,
            token_exchange=token_exchange,
        )


def client_kwargs(settings: ClientSettings, transport: Any | None) -> dict[str, Any]:
    """Keyword arguments for `httpx.Client` / `httpx.AsyncClient`."""
    kwargs: dict[str, Any] = {
        "base_url": settings.url,
        "auth": KdfAuth(settings.api_key, sign=settings.sign, exchange=settings.token_exchange),
        "timeout": httpx.Timeout(settings.timeout, connect=min(10.0, settings.timeout)),
        "headers": {"User-Agent": "kdf-remote-client"},
        "follow_redirects": False,
        "trust_env": False,
    }
    if settings.url.startswith("https://"):
        kwargs["verify"] = ssl_context(settings.ca_pem)
    if transport is not None:
        kwargs["transport"] = transport
    return kwargs


def stream_timeout(settings: ClientSettings, *, read: float | None) -> httpx.Timeout:
    """Timeout of a long-lived stream: normal connect, given read deadline."""
    return httpx.Timeout(settings.timeout, connect=min(10.0, settings.timeout), read=read)


def translate(exc: httpx.HTTPError, url: str) -> errors.KdfRemoteError:
    """Map an httpx failure onto the client's exception tree, with a message a user can act on."""
    if isinstance(exc, httpx.ConnectTimeout):
        return errors.ConnectError(
            f"cannot reach the daemon at {url}: connection timed out", url=url
        )
    if isinstance(exc, httpx.ConnectError):
        reason = str(exc) or type(exc).__name__
        if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate" in reason.lower():
            return errors.ConnectError(
                f"TLS verification of {url} failed ({reason}); check the profile's CA certificate",
                url=url,
            )
        return errors.ConnectError(f"cannot reach the daemon at {url}: {reason}", url=url)
    if isinstance(exc, httpx.TimeoutException):
        return errors.DaemonTimeoutError(f"the daemon at {url} did not answer in time", url=url)
    if isinstance(exc, httpx.TransportError):
        return errors.TransportError(f"connection to the daemon at {url} broke: {exc}", url=url)
    return errors.TransportError(f"HTTP failure talking to {url}: {exc}", url=url)


def request_parts(call: Call[Any], extra_headers: dict[str, str] | None = None) -> dict[str, Any]:
    """`httpx` request arguments of a call."""
    headers = call.headers
    if extra_headers:
        headers.update(extra_headers)
    return {"params": call.params, "content": call.content, "headers": headers}


def sse_headers(state: HealthStreamState | None) -> dict[str, str]:
    """Headers of an SSE request, resuming after `state.last_event_id` when known."""
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if state is not None and state.last_event_id:
        headers["Last-Event-ID"] = state.last_event_id
    return headers
