"""Rate limits, lock-out, the IP allow-list and resource ceilings on the real daemon over TLS.

Reference tests 7, 8 and 10 of style-and-security.md part B. Peers are told apart by the
loopback address the client binds (127.0.0.1, 127.0.0.2, 127.0.0.3), never by a header.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .harness import GENEROUS_LIMITS, SecureDaemon, make_daemon

pytestmark = [pytest.mark.integration, pytest.mark.security]

OTHER_PEER = "127.0.0.2"
PROXY_PEER = "127.0.0.3"
PROBE_PEER = "127.0.0.4"
"""Where the start-up health probe comes from: not an address whose budget a test measures."""


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[SecureDaemon]]:
    """Daemons a test starts (stopped, with their KDF, at teardown)."""
    daemons: list[SecureDaemon] = []
    try:
        yield daemons
    finally:
        for daemon in daemons:
            daemon.stop()


def _run(
    tmp_path: Path,
    started: list[SecureDaemon],
    security: dict[str, object],
    *,
    health_peer: str = PROBE_PEER,
) -> SecureDaemon:
    daemon = make_daemon(tmp_path / f"daemon{len(started)}", {"security": security})
    started.append(daemon)
    daemon.start(health_peer=health_peer)
    return daemon


def test_brute_force_on_the_token_endpoint_gets_429_with_retry_after(
    tmp_path: Path, started: list[SecureDaemon]
) -> None:
    """Reference 7: guessing keys locks the address out (429 + Retry-After), even a right key.

    Another address is not locked out: the lock-out is per client address.
    """
    limits = {"requests_per_minute": 600, "auth_per_minute": 100, "lockout_after": 3}
    daemon = _run(tmp_path, started, {"rate_limit": limits})
    with daemon.client() as http:
        for attempt in range(3):
            guess = {"Authorization": f"Bearer kdfr_{attempt:043d}"}
            assert http.post("/v1/auth/token", headers=guess).status_code == 401
        locked = http.post("/v1/auth/token", headers={"X-API-Key": "kdfr_" + "9" * 43})
        assert locked.status_code == 429
        assert locked.json()["error"] == "locked_out"
        assert int(locked.headers["retry-after"]) > 0
        right = http.post("/v1/auth/token", headers={"X-API-Key": daemon.admin_key})
        assert right.status_code == 429
    with daemon.client(daemon.admin_key, local_address=OTHER_PEER) as other:
        assert other.post("/v1/auth/token").status_code == 200


def test_token_endpoint_is_stricter_than_other_routes(
    tmp_path: Path, started: list[SecureDaemon]
) -> None:
    """Reference 7: the credential endpoint's limit is reached while normal routes still answer."""
    daemon = _run(
        tmp_path,
        started,
        {"rate_limit": {"requests_per_minute": 600, "auth_per_minute": 3, "lockout_after": 100}},
    )
    with daemon.client(daemon.admin_key) as http:
        statuses = [http.post("/v1/auth/token").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert http.get("/v1/instances").status_code == 200


def test_rotating_forwarded_headers_never_yields_a_fresh_bucket(
    tmp_path: Path, started: list[SecureDaemon]
) -> None:
    """Reference 7: X-Forwarded-For / X-Real-IP from an untrusted peer do not pick the bucket."""
    daemon = _run(
        tmp_path,
        started,
        {"rate_limit": {"requests_per_minute": 1, "auth_per_minute": 1, "lockout_after": 100}},
    )
    other_key = daemon.add_key("other", "viewer")
    with daemon.client(daemon.admin_key) as http:
        assert http.get("/v1/instances").status_code == 200
        for hop in range(5):
            spoofed = {"X-Forwarded-For": f"203.0.113.{hop}", "X-Real-IP": f"198.51.100.{hop}"}
            refused = http.get("/v1/instances", headers=spoofed)
            assert refused.status_code == 429, hop
            assert refused.json()["error"] == "rate_limited"
            assert int(refused.headers["retry-after"]) > 0
    # The bucket belongs to the address: another peer with another key is served.
    with daemon.client(other_key, local_address=OTHER_PEER) as other:
        assert other.get("/v1/instances").status_code == 200


def test_non_listed_ip_gets_403_even_with_a_valid_token(
    tmp_path: Path, started: list[SecureDaemon]
) -> None:
    """Reference 8: 127.0.0.1 is not listed; its valid token, key and forged header get 403.

    A trusted proxy (127.0.0.3) may vouch for a listed client; the proxy alone is not enough.
    """
    daemon = _run(
        tmp_path,
        started,
        {
            "allowed_ips": [f"{OTHER_PEER}/32"],
            "trusted_proxies": [f"{PROXY_PEER}/32"],
            "rate_limit": GENEROUS_LIMITS,
        },
        health_peer=OTHER_PEER,
    )
    token = daemon.token(daemon.admin_key, local_address=OTHER_PEER)
    with daemon.client(token, local_address=OTHER_PEER) as listed:
        assert listed.get("/v1/instances").status_code == 200
    for credential in (token, daemon.admin_key):
        with daemon.client(credential) as outsider:
            response = outsider.get("/v1/instances")
            assert response.status_code == 403
            assert response.json()["error"] == "ip_not_allowed"
            forged = outsider.get("/v1/instances", headers={"X-Forwarded-For": OTHER_PEER})
            assert forged.status_code == 403
            assert outsider.get("/v1/health").status_code == 403
    with daemon.client(token, local_address=PROXY_PEER) as proxy:
        assert proxy.get("/v1/instances", headers={"X-Forwarded-For": OTHER_PEER}).is_success
        assert proxy.get("/v1/instances").status_code == 403
        spoofed_chain = {"X-Forwarded-For": f"{OTHER_PEER}, 192.0.2.77"}
        assert proxy.get("/v1/instances", headers=spoofed_chain).status_code == 403


def test_body_over_the_limit_is_413_before_it_is_read(shared_daemon: SecureDaemon) -> None:
    """Reference 10: declared and chunked bodies over ``max_body_size`` (16K) get 413."""
    big = b'{"gui": "' + b"x" * 20_000 + b'"}'

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    with shared_daemon.client(shared_daemon.operator_key) as http:
        declared = http.put("/v1/instances/main/config", content=big)
        assert declared.status_code == 413
        assert declared.json()["error"] == "payload_too_large"
        chunked = http.put("/v1/instances/main/config", content=chunks())
        assert chunked.status_code == 413
        rpc = http.post("/v1/instances/main/rpc", content=big)
        assert rpc.status_code == 413
    with shared_daemon.client() as anonymous:
        assert anonymous.put("/v1/instances/main/config", content=big).status_code == 413


def test_log_tail_and_audit_pages_are_capped(shared_daemon: SecureDaemon) -> None:
    """Reference 10: ``tail`` above ``max_log_tail`` (500) and audit pages above 1000 get 400."""
    with shared_daemon.client(shared_daemon.admin_key) as http:
        assert http.get("/v1/instances/main/logs", params={"tail": 500}).status_code == 200
        too_long = http.get("/v1/instances/main/logs", params={"tail": 501})
        assert too_long.status_code == 400
        assert "security.max_log_tail" in too_long.json()["detail"]
        assert http.get("/v1/audit", params={"limit": 1000}).status_code == 200
        assert http.get("/v1/audit", params={"limit": 1001}).status_code == 400


def test_concurrent_streams_are_capped(shared_daemon: SecureDaemon) -> None:
    """Reference 10: beyond ``max_streams`` (2) a further SSE stream gets 429."""
    path = "/v1/instances/main/health"
    timeout = httpx.Timeout(30.0, read=None)
    with (
        shared_daemon.client(shared_daemon.viewer_key) as http,
        http.stream("GET", path, params={"watch": "true"}, timeout=timeout) as first,
        http.stream("GET", path, params={"watch": "true"}, timeout=timeout) as second,
    ):
        assert (first.status_code, second.status_code) == (200, 200)
        third = http.get(path, params={"watch": "true"})
        assert third.status_code == 429
        assert third.json()["error"] == "too_many_streams"
