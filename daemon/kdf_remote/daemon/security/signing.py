"""Request signing: an HMAC over the request, fresh timestamps and single-use nonces.

Canonical string (architecture.md, "Security seams")::

    METHOD "\\n" PATH[?QUERY] "\\n" TIMESTAMP "\\n" NONCE "\\n" sha256hex(body)

signed with HMAC-SHA256 under ``HMAC-SHA256(key=api_key, msg=b"kdf-remote request signing v1")``
and sent as ``X-KDF-Timestamp`` (Unix seconds), ``X-KDF-Nonce`` (16-128 URL-safe characters) and
``X-KDF-Signature: v1=<64 hex>``. ``PATH[?QUERY]`` is the request target exactly as sent (still
percent-encoded). A timestamp more than ``window`` seconds away from the daemon's clock, or a
nonce already seen for the same key within the window, is refused: a captured request cannot be
replayed, and since the signature covers the body hash, it cannot be altered either.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import msgspec

from kdf_remote.daemon.security.errors import SignatureError
from kdf_remote.daemon.security.keystore import derive_signing_key

__all__ = [
    "NONCE_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "NonceCache",
    "SignatureHeaders",
    "SignatureVerifier",
    "canonical_request",
    "derive_signing_key",
    "sign",
]

TIMESTAMP_HEADER: Final = b"x-kdf-timestamp"
NONCE_HEADER: Final = b"x-kdf-nonce"
SIGNATURE_HEADER: Final = b"x-kdf-signature"
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_SIGNATURE = re.compile(r"^v1=([0-9a-f]{64})$")


class SignatureHeaders(msgspec.Struct, frozen=True):
    """The three signing headers of a request, as text."""

    timestamp: str
    nonce: str
    signature: str


def canonical_request(method: str, target: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """The bytes that are signed."""
    parts = (method.upper(), target, timestamp, nonce, hashlib.sha256(body).hexdigest())
    return "\n".join(parts).encode("utf-8")


def sign(  # noqa: PLR0917  # the canonical string's parts, in order
    signing_key: bytes, method: str, target: str, timestamp: str, nonce: str, body: bytes
) -> str:
    """The ``X-KDF-Signature`` value (``v1=<hex>``) for a request; clients and tests use it."""
    message = canonical_request(method, target, timestamp, nonce, body)
    return "v1=" + hmac.new(signing_key, message, hashlib.sha256).hexdigest()


class NonceCache:
    """Nonces seen per key until they fall out of the timestamp window.

    When full of live nonces it refuses new ones (fail closed) rather than forget one that a
    replay could then reuse.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_entries: int = 200_000
    ) -> None:
        self._clock = clock
        self._max = max_entries
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def remember(self, namespace: str, nonce: str, ttl: float) -> bool:
        """Record ``nonce`` for ``ttl`` seconds; False if it was already there (a replay).

        Raises:
            SignatureError: the cache is full of unexpired nonces.
        """
        now = self._clock()
        self._expire(now)
        key = (namespace, nonce)
        if key in self._seen:
            return False
        if len(self._seen) >= self._max:
            raise SignatureError("too many signed requests in flight; retry shortly", guess=False)
        self._seen[key] = now + ttl
        return True

    def _expire(self, now: float) -> None:
        # Entries are appended with the same ttl, so the oldest expires first.
        while self._seen:
            key, expires = next(iter(self._seen.items()))
            if expires > now:
                break
            del self._seen[key]

    def __len__(self) -> int:
        return len(self._seen)


class SignatureVerifier:
    """Checks signed requests.

    Args:
        window: seconds a timestamp may differ from the daemon's clock (either way).
        nonces: where seen nonces are kept.
        wall_clock: Unix time.
    """

    def __init__(
        self,
        *,
        window: float,
        nonces: NonceCache,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self._nonces = nonces
        self._wall = wall_clock

    def verify(
        self,
        *,
        signing_key: bytes,
        namespace: str,
        method: str,
        target: str,
        headers: SignatureHeaders,
        body: bytes,
    ) -> None:
        """Accept the request or raise.

        Args:
            signing_key: the key's derived signing key.
            namespace: the key id, so two keys never share a nonce space.
            method: HTTP method.
            target: path and query as sent.
            headers: the three signing headers.
            body: the complete body.

        Raises:
            SignatureError: malformed headers, stale timestamp, bad signature, or replay.
        """
        if _TIMESTAMP.match(headers.timestamp) is None:
            raise SignatureError("malformed X-KDF-Timestamp: expected Unix seconds")
        if _NONCE.match(headers.nonce) is None:
            raise SignatureError("malformed X-KDF-Nonce: expected 16-128 URL-safe characters")
        match = _SIGNATURE.match(headers.signature)
        if match is None:
            raise SignatureError("malformed X-KDF-Signature: expected v1=<64 hex digits>")
        if abs(self._wall() - int(headers.timestamp)) > self.window:
            raise SignatureError("request timestamp outside the accepted window", guess=False)
        expected = sign(signing_key, method, target, headers.timestamp, headers.nonce, body)
        if not hmac.compare_digest(expected, headers.signature):
            raise SignatureError("signature does not match the request")
        # Only a correctly signed request may occupy the nonce cache. Its nonce must be kept
        # for as long as its timestamp stays acceptable: twice the window covers both sides.
        if not self._nonces.remember(namespace, headers.nonce, 2 * self.window):
            raise SignatureError("replayed request (nonce already used)")
