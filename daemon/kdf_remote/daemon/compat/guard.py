"""The listener's own brute-force defence: userpass checked in constant time, failures locked out.

KDF bans an address after 10 wrong userpasses for the rest of its life, and the daemon reaches
KDF from 127.0.0.1: forwarding guesses would get the daemon itself banned. So the listener
checks ``userpass`` before anything reaches KDF, and a client that keeps guessing is locked out
(429) by the security package's :class:`~kdf_remote.daemon.security.ratelimit.FailureLockout`,
keyed by its address (IPv6 by /64). The counter it keeps beside the lock-out only serves KDF's
"Rate Limit attempts left: N" message.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from kdf_remote.daemon.security.ratelimit import FailureLockout

__all__ = ["UserpassGuard", "userpass_matches"]

MAX_CLIENTS: Final = 100_000


def userpass_matches(given: str, expected: str) -> bool:
    """Constant-time equality of two userpasses.

    Both are hashed first, so neither the content nor the length of the real password shows
    in the time the comparison takes.
    """
    return hmac.compare_digest(_digest(given), _digest(expected))


def _digest(text: str) -> bytes:
    # surrogatepass: a JSON "\ud800" escape decodes to a lone surrogate; it must not raise.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass(slots=True)
class _Count:
    failures: int
    window_start: float


class UserpassGuard:
    """Counts wrong userpasses per client key and locks the key out after ``max_failures``.

    Args:
        max_failures: wrong userpasses within ``lockout`` seconds that lock the client out.
        lockout: seconds a locked-out client waits; also the window failures are counted over.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        *,
        max_failures: int,
        lockout: float,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.max_failures = max_failures
        self._window = lockout
        self._clock = clock
        self._max_clients = max_clients
        self._lockout = FailureLockout(
            max_failures=max_failures,
            lockout=lockout,
            window=lockout,
            clock=clock,
            max_keys=max_clients,
        )
        self._counts: OrderedDict[str, _Count] = OrderedDict()

    def retry_after(self, key: str) -> float:
        """Seconds ``key`` stays locked out (0.0 when it is not)."""
        return self._lockout.retry_after(key)

    def record_failure(self, key: str) -> int:
        """Count one wrong userpass from ``key``; returns the attempts left before the lock-out."""
        now = self._clock()
        count = self._counts.get(key)
        if count is None or now - count.window_start > self._window:
            count = _Count(failures=0, window_start=now)
            self._counts[key] = count
        self._counts.move_to_end(key)
        count.failures += 1
        if self._lockout.record_failure(key) > 0:
            # Locked: the next window starts now, as it does in the lock-out itself.
            del self._counts[key]
            return 0
        while len(self._counts) > self._max_clients:
            self._counts.popitem(last=False)
        return max(0, self.max_failures - count.failures)
