"""The kdf_compat listener on a real port, in front of kdf-sim, compared with kdf-sim itself."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Iterator

import httpx
import pytest

from _loopback import DEADLINE_S, wait_for

from .conftest import ADMIN_KEY, RPC_PASSWORD, VIEWER_KEY, CompatStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCUMENTED: list[object] = [
    {"method": "version"},
    {"method": "version", "userpass": "not-the-password"},
    {"method": "get_enabled_coins", "userpass": RPC_PASSWORD},
    {"mmrpc": "2.0", "method": "get_enabled_coins", "userpass": RPC_PASSWORD},
    {"mmrpc": "2.0", "method": "get_enabled_coins", "userpass": RPC_PASSWORD, "id": 42},
    {"mmrpc": "2.0", "method": "version", "userpass": RPC_PASSWORD},
    {"method": "my_balance", "coin": "NOPE", "userpass": RPC_PASSWORD},
    [
        {"method": "version"},
        {"method": "get_enabled_coins", "userpass": RPC_PASSWORD},
        {"mmrpc": "2.0", "method": "get_enabled_coins", "userpass": RPC_PASSWORD, "id": 3},
        {"mmrpc": "2.0", "method": "nope", "userpass": RPC_PASSWORD},
    ],
]
"""kdf-facts 2.2-2.5: legacy and v2 successes, KDF's own errors, and a batch of them."""


def test_documented_requests_answer_as_kdf_itself(stack: CompatStack) -> None:
    """Each documented call gets the same status and the same body bytes as from KDF directly."""
    statuses = set()
    with (
        stack.client(stack.compat_url, key=None) as compat,
        httpx.Client(base_url=stack.kdf_url, timeout=DEADLINE_S) as kdf,
    ):
        for request in DOCUMENTED:
            body = json.dumps(request).encode()
            through = compat.post("/", content=body)
            direct = kdf.post("/", content=body)
            assert (through.status_code, through.content) == (direct.status_code, direct.content), (
                request
            )
            statuses.add(direct.status_code)
    # The comparison means something: successes and KDF's own errors were both among them.
    assert {200, 400, 500} <= statuses


def test_lane_and_asgi_answer_alike(stack: CompatStack) -> None:
    """A Content-Length POST (served on the listener's lane) and a chunked one (through ASGI)
    get the same status, body and headers but the date."""
    call = json.dumps({"method": "version", "userpass": RPC_PASSWORD}).encode()

    def chunked() -> Iterator[bytes]:
        yield call

    with stack.client(stack.compat_url, key=None) as compat:
        lane = compat.post("/", content=call)
        asgi = compat.post("/", content=chunked())
    assert (lane.status_code, lane.content) == (asgi.status_code, asgi.content)
    assert lane.status_code == 200 and lane.json()["result"]
    for name in ("access-control-allow-origin", "content-type", "x-content-type-options"):
        assert lane.headers[name] == asgi.headers[name], name


def test_wrong_userpass_gets_kdfs_error_and_never_reaches_kdf(stack: CompatStack) -> None:
    """KDF's legacy and v2 auth errors, answered by the daemon; KDF never sees the call."""
    with stack.client(stack.compat_url, key=None, source="127.0.0.4") as compat:
        legacy = compat.post("/", json={"method": "get_my_peer_id", "userpass": "guess"})
        v2 = compat.post(
            "/", json={"mmrpc": "2.0", "method": "get_wallet_names", "userpass": "guess"}
        )
    assert legacy.status_code == 500
    assert "Userpass is invalid! - Rate Limit attempts left:" in legacy.json()["error"]
    assert v2.status_code == 403
    assert v2.json()["error_type"] == "UserpassIsInvalid"
    assert set(v2.json()) == {
        "mmrpc",
        "error",
        "error_path",
        "error_trace",
        "error_type",
        "error_data",
        "id",
    }
    methods = stack.kdf_methods()
    assert "get_my_peer_id" not in methods
    assert "get_wallet_names" not in methods


def test_twenty_wrong_attempts_lock_out_while_the_rest_proxy_works(stack: CompatStack) -> None:
    """Brute force: 429 lock-out on the listener; KDF never banned the daemon's loopback."""
    guess = {"mmrpc": "2.0", "method": "get_enabled_coins", "userpass": "guess"}
    with stack.client(stack.compat_url, key=None, source="127.0.0.5") as attacker:
        statuses = [attacker.post("/", json={**guess, "id": i}).status_code for i in range(20)]
        locked = attacker.post("/", content=b'{"method":"version"}')
    assert statuses[0] == 403
    assert 429 in statuses
    assert statuses[-1] == 429
    assert statuses.index(429) <= 10  # KDF would have banned 127.0.0.1 at 10
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    with stack.client(stack.rest_url) as rest:
        proxied = rest.post(
            "/v1/instances/main/rpc", json={"method": "get_enabled_coins", "userpass": "x"}
        )
    assert proxied.status_code == 200, proxied.text
    assert "result" in proxied.json()
    with stack.client(stack.compat_url, key=None) as other:
        assert other.post("/", json={**guess, "userpass": RPC_PASSWORD}).status_code == 200


def test_denied_methods_never_reach_kdf(stack: CompatStack) -> None:
    """Defaults (show_priv_key, get_mnemonic) and configured ones (stop) are refused."""
    denied = [
        {"method": "show_priv_key", "coin": "KMD", "userpass": RPC_PASSWORD},
        {
            "mmrpc": "2.0",
            "method": "get_mnemonic",
            "userpass": RPC_PASSWORD,
            "params": {"format": "plaintext"},
        },
        {"method": "get_mnemonic", "userpass": RPC_PASSWORD},
        {"method": "stop", "userpass": RPC_PASSWORD},
    ]
    with stack.client(stack.compat_url, key=None) as compat:
        answers = [compat.post("/", json=request) for request in denied]
        batch = compat.post("/", json=[{"method": "version"}, *denied])
    assert [a.status_code for a in answers] == [500, 403, 500, 500]
    assert "Selected method is not allowed: show_priv_key" in answers[0].json()["error"]
    assert answers[1].json()["error_type"] == "MethodNotAllowed"
    assert batch.status_code == 200
    assert "result" in batch.json()[0]
    assert all("error" in item for item in batch.json()[1:])
    methods = stack.kdf_methods()
    for name in ("show_priv_key", "get_mnemonic", "stop"):
        assert name not in methods
    with stack.client(stack.rest_url) as rest:
        assert rest.get("/v1/instances/main").json()["state"] == "running"


def test_cors_preflight_and_get_match_kdf(stack: CompatStack) -> None:
    """OPTIONS and ``GET /`` get exactly KDF's status, CORS headers and error body."""
    cors = (
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-max-age",
    )
    with (
        stack.client(stack.compat_url, key=None) as compat,
        httpx.Client(base_url=stack.kdf_url, timeout=DEADLINE_S) as kdf,
    ):
        ours, theirs = compat.options("/"), kdf.options("/")
        assert ours.status_code == theirs.status_code == 200
        assert [ours.headers.get(h) for h in cors] == [theirs.headers.get(h) for h in cors]
        assert ours.headers["access-control-allow-origin"] == "https://app.example"
        get_ours, get_theirs = compat.get("/"), kdf.get("/")
        assert (get_ours.status_code, get_ours.json()) == (
            get_theirs.status_code,
            get_theirs.json(),
        )


@contextlib.contextmanager
def _events(client: httpx.Client, path: str) -> Iterator[queue.Queue[dict[str, object]]]:
    frames: queue.Queue[dict[str, object]] = queue.Queue()
    ready = threading.Event()
    status: list[int] = []
    with client.stream("GET", path, timeout=httpx.Timeout(DEADLINE_S, read=None)) as response:
        status.append(response.status_code)

        def read() -> None:
            ready.set()
            with contextlib.suppress(httpx.HTTPError):
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        frames.put(json.loads(line.partition(":")[2]))

        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        ready.wait(DEADLINE_S)
        try:
            yield frames
        finally:
            response.close()
    reader.join(DEADLINE_S)


def test_event_stream_is_relayed_from_kdf(stack: CompatStack) -> None:
    """``GET /event-stream`` shows KDF's heartbeat frames once a streamer is enabled."""
    with (
        stack.client(stack.compat_url, key=None) as compat,
        stack.client(stack.compat_url, key=None) as rpc,
        _events(compat, "/event-stream?id=7") as frames,
    ):
        enabled = rpc.post(
            "/",
            json={
                "mmrpc": "2.0",
                "method": "stream::heartbeat::enable",
                "userpass": RPC_PASSWORD,
                "params": {"client_id": 7, "config": {"stream_interval_seconds": 0.2}},
            },
        )
        assert enabled.status_code == 200, enabled.text
        frame = frames.get(timeout=DEADLINE_S)
    assert frame["_type"] == "HEARTBEAT"


def test_admin_endpoint_gives_remote_config_and_is_audited(stack: CompatStack) -> None:
    """Admins get the SDK's RemoteConfig values with the rpc_password; viewers do not."""
    with (
        stack.client(stack.rest_url) as admin,
        stack.client(stack.rest_url, key=VIEWER_KEY) as viewer,
    ):
        shown = admin.get("/v1/instances/main/kdf-compat")
        refused = viewer.get("/v1/instances/main/kdf-compat")
        missing = admin.get("/v1/instances/nope/kdf-compat")
    assert shown.status_code == 200, shown.text
    assert shown.json() == {
        "url": stack.compat_url,
        "ip_address": "127.0.0.1",
        "port": stack.compat_port,
        "https": False,
        "rpc_password": RPC_PASSWORD,
    }
    assert shown.headers["cache-control"] == "no-store"
    assert refused.status_code == 403
    assert missing.status_code == 404
    audit = (stack.root / "state" / "audit.log").read_text().splitlines()
    disclosed = [json.loads(line) for line in audit if "kdf-compat" in line]
    assert any(e["outcome"] == "ok" and e["actor"] for e in disclosed)
    compat_lines = [json.loads(line) for line in audit if '"kdf_compat POST /"' in line]
    assert compat_lines
    assert all(RPC_PASSWORD not in line for line in audit)
    assert ADMIN_KEY not in "".join(audit)


def test_request_log_is_real(stack: CompatStack) -> None:
    """The request log the deny tests rely on records the calls that did reach KDF."""
    probe = {"mmrpc": "2.0", "method": "compat_log_probe", "userpass": RPC_PASSWORD}
    with stack.client(stack.compat_url, key=None) as compat:
        answer = compat.post("/", json=probe)
    assert answer.json()["error_type"] == "NoSuchMethod"
    wait_for(lambda: "compat_log_probe" in stack.kdf_methods(), "kdf-sim to log the call")


def _cli(args: list[str]) -> int:
    from kdf_remote.client.cli.app import app

    result = app(args, result_action="return_value")
    assert isinstance(result, int)
    return result


def test_profile_show_gives_an_sdk_app_what_it_needs(
    stack: CompatStack, capsys: pytest.CaptureFixture[str]
) -> None:
    """``profile show --show-secret`` prints RemoteConfig values that work as an SDK app's."""
    from kdf_remote.client.profiles import Profile, save_profile

    save_profile(
        Profile(name="it", url=stack.rest_url, api_key=ADMIN_KEY, kdf_rpc_url=stack.compat_url)
    )
    save_profile(Profile(name="bare", url=stack.rest_url, api_key=ADMIN_KEY))
    save_profile(
        Profile(name="dash", url=stack.rest_url, api_key=VIEWER_KEY, kdf_rpc_url=stack.compat_url)
    )
    capsys.readouterr()
    assert _cli(["profile", "show", "it", "--json"]) == 0
    hidden = json.loads(capsys.readouterr().out)["remote_config"]
    assert hidden == {"ip_address": "127.0.0.1", "port": stack.compat_port, "https": False}
    assert _cli(["profile", "show", "it", "--show-secret", "--json"]) == 0
    config = json.loads(capsys.readouterr().out)["remote_config"]
    assert config == {**hidden, "rpc_password": RPC_PASSWORD}
    # Without kdf_rpc_url in the profile, the daemon says where its listener is.
    assert _cli(["profile", "show", "bare", "--show-secret", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["remote_config"] == config
    # A viewer key may not read the password.
    assert _cli(["profile", "show", "dash", "--show-secret", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "role_required"
    # What KdfOperationsRemote.mm2Rpc does with those values: POST to http(s)://ip:port.
    scheme = "https" if config["https"] else "http"
    url = f"{scheme}://{config['ip_address']}:{config['port']}"
    answer = httpx.post(
        url, json={"method": "get_enabled_coins", "userpass": config["rpc_password"]}
    )
    assert answer.status_code == 200
    assert "result" in answer.json()
