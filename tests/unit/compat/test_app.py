"""The kdf_compat ASGI app in-process, over a fake instance that records what reached "KDF"."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import pytest

from kdf_remote.daemon.compat.app import CompatApp, CompatSettings
from kdf_remote.daemon.compat.backend import BackendError, InstanceView
from kdf_remote.daemon.compat.protocol import DEFAULT_DENY_METHODS
from kdf_remote.daemon.security.audit import AuditLog, AuditThrottle, read_audit_tail
from kdf_remote.daemon.security.ipaccess import IpAllowList, NetworkSet, ip_network
from kdf_remote.kdf.transport import RawResponse

pytestmark = pytest.mark.unit

PASSWORD = "Right-Pass-42!x"
SECRET_PARAM = "do-not-log-this-address"


@dataclass
class Clock:
    """Monotonic seconds that move only when told."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeInstance:
    """Answers like KDF: echoes the methods it received, records every body."""

    view_value: InstanceView | None = field(
        default_factory=lambda: InstanceView(
            rpc_password=PASSWORD, rpccors=None, event_streaming=False, rpc_port=None
        )
    )
    received: list[bytes] = field(default_factory=list)
    fail: BackendError | None = None

    def view(self, name: str) -> InstanceView | None:
        return self.view_value

    async def rpc(self, name: str, body: bytes) -> RawResponse:
        if self.fail is not None:
            raise self.fail
        self.received.append(body)
        parsed = json.loads(body)
        calls = parsed if isinstance(parsed, list) else [parsed]
        answers = [{"result": f"kdf saw {call.get('method')}"} for call in calls]
        payload = answers if isinstance(parsed, list) else answers[0]
        headers = (("access-control-allow-origin", "*"), ("content-type", "application/json"))
        return RawResponse(status=200, headers=headers, body=json.dumps(payload).encode())

    def methods_received(self) -> list[str | None]:
        out: list[str | None] = []
        for body in self.received:
            parsed = json.loads(body)
            out.extend(c.get("method") for c in (parsed if isinstance(parsed, list) else [parsed]))
        return out


@dataclass
class Harness:
    """One app, its fake instance, its audit file and its clock."""

    app: CompatApp
    instance: FakeInstance
    audit_path: Path
    audit: AuditLog
    clock: Clock

    def client(self, peer: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(peer, 50000))
        return httpx.AsyncClient(transport=transport, base_url="http://kdf.test")

    def audit_lines(self) -> list[dict[str, object]]:
        """The audit entries, once the lines queued for the next loop turn are written."""
        self.audit.flush()
        return [msgspec.to_builtins(e) for e in read_audit_tail(self.audit_path, limit=1000)]


HarnessFactory = Callable[..., Harness]


@pytest.fixture
def harness(tmp_path: Path) -> Iterable[HarnessFactory]:
    """Builds an app over a fake instance; closes its audit logs at the end."""
    logs: list[AuditLog] = []

    def build(
        *,
        allowed: Iterable[str] = (),
        lockout_after: int = 5,
        requests_per_minute: int = 6000,
        max_body_size: int = 4096,
        deny: Iterable[str] = (),
        instance: FakeInstance | None = None,
    ) -> Harness:
        clock = Clock()
        audit_path = tmp_path / f"audit-{len(logs)}.log"
        audit = AuditLog(audit_path)
        logs.append(audit)
        fake = instance or FakeInstance()
        app = CompatApp(
            config=CompatSettings(
                instance="main",
                deny_methods=DEFAULT_DENY_METHODS | frozenset(deny),
                max_body_size=max_body_size,
                requests_per_minute=requests_per_minute,
                lockout_after=lockout_after,
                lockout=900.0,
            ),
            backend=fake,
            allow_list=IpAllowList(ip_network(cidr) for cidr in allowed),
            trusted_proxies=NetworkSet(()),
            audit=audit,
            audit_throttle=AuditThrottle(clock=clock),
            clock=clock,
        )
        return Harness(app=app, instance=fake, audit_path=audit_path, audit=audit, clock=clock)

    yield build
    for log in logs:
        log.close()


@pytest.fixture
async def h(harness: HarnessFactory) -> AsyncIterator[Harness]:
    """A default harness."""
    yield harness()


async def test_authenticated_and_public_calls_reach_kdf(h: Harness) -> None:
    """A right userpass or a public method goes through; KDF's answer comes back as is."""
    async with h.client() as http:
        version = await http.post("/", content=b'{"method":"version"}')
        coins = await http.post("/", json={"method": "get_enabled_coins", "userpass": PASSWORD})
    assert version.status_code == 200
    assert version.json() == {"result": "kdf saw version"}
    assert coins.json() == {"result": "kdf saw get_enabled_coins"}
    assert version.headers["access-control-allow-origin"] == "*"
    assert version.headers["x-content-type-options"] == "nosniff"
    assert h.instance.methods_received() == ["version", "get_enabled_coins"]


async def test_wrong_or_missing_userpass_never_reaches_kdf(h: Harness) -> None:
    """KDF's own error shapes answer a bad userpass, and KDF is never asked."""
    async with h.client() as http:
        legacy = await http.post("/", json={"method": "my_balance", "userpass": "guess"})
        v2 = await http.post(
            "/", json={"mmrpc": "2.0", "method": "get_enabled_coins", "userpass": "guess", "id": 1}
        )
        unset = await http.post("/", json={"method": "my_balance"})
    assert legacy.status_code == 500
    assert legacy.json() == {
        "error": "kdf_remote] Userpass is invalid! - Rate Limit attempts left: 4"
    }
    assert v2.status_code == 403
    assert v2.json()["error_type"] == "UserpassIsInvalid"
    assert v2.json()["error_data"] == {"error_type": "NbAttemptsLeft", "error_data": 3}
    assert v2.json()["id"] == 1
    assert unset.status_code == 500
    assert unset.json() == {"error": "kdf_remote] Userpass is not set!"}
    assert h.instance.received == []


async def test_lockout_after_failures_blocks_every_call_until_it_expires(
    harness: HarnessFactory,
) -> None:
    """After ``lockout_after`` wrong userpasses the address gets 429, even for ``version``."""
    h = harness(lockout_after=3)
    async with h.client() as http, h.client("127.0.0.9") as other:
        statuses = [
            (await http.post("/", json={"method": "stop", "userpass": f"g{i}"})).status_code
            for i in range(3)
        ]
        locked = await http.post("/", content=b'{"method":"version"}')
        elsewhere = await other.post("/", content=b'{"method":"version"}')
        h.clock.now += 901
        after = await http.post("/", content=b'{"method":"version"}')
    assert statuses == [500, 500, 500]
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    assert "error" in locked.json()
    assert elsewhere.status_code == 200
    assert after.status_code == 200
    assert h.instance.methods_received() == ["version", "version"]


async def test_a_batch_gets_no_more_guesses_than_separate_requests(
    harness: HarnessFactory,
) -> None:
    """Guesses in one batch count one by one; once locked out, even the right one fails."""
    h = harness(lockout_after=3)
    guesses = [{"method": "get_enabled_coins", "userpass": f"g{i}"} for i in range(5)]
    right = {"method": "get_enabled_coins", "userpass": PASSWORD}
    async with h.client() as http:
        answer = await http.post("/", json=[*guesses, right])
        after = await http.post("/", json=right)
    assert answer.status_code == 200
    assert all("Userpass is invalid" in item["error"] for item in answer.json())
    assert after.status_code == 429
    assert h.instance.received == []


async def test_denied_methods_are_answered_in_kdf_shape(harness: HarnessFactory) -> None:
    """Defaults and configured names are refused even with the right userpass."""
    h = harness(deny=["withdraw"])
    async with h.client() as http:
        legacy = await http.post(
            "/", json={"method": "show_priv_key", "coin": "KMD", "userpass": PASSWORD}
        )
        rerouted = await http.post("/", json={"method": "get_mnemonic", "userpass": PASSWORD})
        v2 = await http.post(
            "/",
            json={"mmrpc": "2.0", "method": "withdraw", "userpass": PASSWORD, "params": {}},
        )
    assert legacy.status_code == 500
    assert "Selected method is not allowed: show_priv_key" in legacy.json()["error"]
    assert rerouted.status_code == 500
    assert v2.status_code == 403
    assert v2.json()["error_type"] == "MethodNotAllowed"
    assert h.instance.received == []


async def test_batch_forwards_only_allowed_calls_and_keeps_order(h: Harness) -> None:
    """A mixed batch: refusals in place, KDF asked only about the rest, HTTP 200."""
    batch = [
        {"method": "version"},
        {"method": "my_balance", "coin": "KMD", "userpass": "guess"},
        {"mmrpc": "2.0", "method": "get_mnemonic", "userpass": PASSWORD, "params": {}},
        {"method": "get_enabled_coins", "userpass": PASSWORD},
    ]
    async with h.client() as http:
        answer = await http.post("/", json=batch)
    assert answer.status_code == 200
    items = answer.json()
    assert items[0] == {"result": "kdf saw version"}
    assert "Userpass is invalid" in items[1]["error"]
    assert items[2]["error_type"] == "MethodNotAllowed"
    assert items[3] == {"result": "kdf saw get_enabled_coins"}
    assert h.instance.methods_received() == ["version", "get_enabled_coins"]


async def test_a_fully_refused_batch_does_not_call_kdf(h: Harness) -> None:
    """When every element is refused, the answer is built without KDF."""
    async with h.client() as http:
        answer = await http.post("/", json=[{"method": "stop"}, {"method": "sim_panic"}])
    assert answer.status_code == 200
    assert [next(iter(item)) for item in answer.json()] == ["error", "error"]
    assert h.instance.received == []


async def test_get_and_junk_are_answered_as_kdf_does(h: Harness) -> None:
    """``GET /`` and non-JSON bodies are HTTP 500 ``{"error": serde}``; JSON over GET too."""
    async with h.client() as http:
        get = await http.get("/")
        junk = await http.post("/", content=b"not json")
        json_get = await http.request("GET", "/", content=b'{"method":"version"}')
    assert get.status_code == 500
    assert get.json() == {"error": "EOF while parsing a value at line 1 column 0"}
    assert junk.status_code == 500
    assert "line 1 column" in junk.json()["error"]
    assert json_get.status_code == 500
    assert json_get.json()["error"].endswith("Only POST requests are supported!")
    assert h.instance.received == []


async def test_options_is_kdfs_cors_preflight(harness: HarnessFactory) -> None:
    """OPTIONS on any path: 200, empty, KDF's four CORS headers with the configured origin."""
    h = harness(
        instance=FakeInstance(
            view_value=InstanceView(
                rpc_password=PASSWORD,
                rpccors="https://app.example",
                event_streaming=False,
                rpc_port=None,
            )
        )
    )
    async with h.client() as http:
        answer = await http.options("/anything")
    assert answer.status_code == 200
    assert answer.content == b""
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    assert answer.headers["access-control-allow-methods"] == "POST, OPTIONS"
    assert answer.headers["access-control-allow-headers"] == "Content-Type"
    assert answer.headers["access-control-max-age"] == "3600"


async def test_allow_list_rate_limit_and_body_cap(harness: HarnessFactory) -> None:
    """Refused addresses get 403, floods 429, oversized bodies 413; none reach KDF."""
    listed = harness(allowed=["10.1.0.0/16"])
    async with listed.client("127.0.0.1") as outsider, listed.client("10.1.2.3") as insider:
        assert (await outsider.post("/", content=b'{"method":"version"}')).status_code == 403
        assert (await insider.post("/", content=b'{"method":"version"}')).status_code == 200
    slow = harness(requests_per_minute=4)
    async with slow.client() as http:
        statuses = [
            (await http.post("/", content=b'{"method":"version"}')).status_code for _ in range(3)
        ]
    assert statuses == [200, 429, 429]
    small = harness(max_body_size=64)
    async with small.client() as http:
        big = await http.post("/", json={"method": "version", "pad": "x" * 100})
    assert big.status_code == 413
    assert small.instance.received == []


async def test_instance_down_is_503_in_legacy_shape(harness: HarnessFactory) -> None:
    """A stopped instance: 503 ``{"error": ...}`` (a down KDF refuses; the SDK sees unavailable)."""
    h = harness(instance=FakeInstance(fail=BackendError(503, "instance 'main' is not running")))
    async with h.client() as http:
        answer = await http.post("/", content=b'{"method":"version"}')
    assert answer.status_code == 503
    assert answer.json() == {"error": "kdf_remote] instance 'main' is not running"}


async def test_no_stored_config_is_503_and_counts_no_failure(harness: HarnessFactory) -> None:
    """Before the instance has a config (or while the daemon restarts) nothing is judged."""
    h = harness(lockout_after=1, instance=FakeInstance(view_value=None))
    async with h.client() as http:
        first = await http.post("/", json={"method": "my_balance", "userpass": PASSWORD})
        second = await http.post("/", json={"method": "my_balance", "userpass": PASSWORD})
    assert first.status_code == second.status_code == 503
    assert "is not available" in first.json()["error"]
    assert h.instance.received == []


async def test_event_stream_disabled_answers_like_kdf(h: Harness) -> None:
    """Without event_streaming_configuration, ``GET /event-stream`` is KDF's 500 text."""
    async with h.client() as http:
        answer = await http.get("/event-stream", params={"id": "1"})
    assert answer.status_code == 500
    assert answer.text == "Event streaming is disabled"


async def test_every_call_is_audited_with_method_names_only(h: Harness) -> None:
    """One audit line per call: methods and refusals, never a parameter or the userpass."""
    async with h.client() as http:
        await http.post("/", json={"method": "withdraw", "to": SECRET_PARAM, "userpass": PASSWORD})
        await http.post("/", json={"method": "my_balance", "userpass": "guess-xyz"})
    lines = h.audit_lines()
    assert [line["action"] for line in lines] == ["kdf_compat POST /", "kdf_compat POST /"]
    assert lines[0]["outcome"] == "ok"
    assert lines[0]["detail"] == "methods: withdraw"
    assert lines[0]["actor"] == "rpc_password"
    assert lines[1]["outcome"] == "denied"
    assert lines[1]["detail"] == "methods: my_balance; refused: my_balance (wrong userpass)"
    text = h.audit_path.read_text()
    for secret in (SECRET_PARAM, PASSWORD, "guess-xyz"):
        assert secret not in text
