"""kdf_remote.api: one set of wire types for the daemon and the client, on msgspec alone."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from kdf_remote import api

pytestmark = pytest.mark.unit

STATUS = {
    "name": "main",
    "state": "running",
    "pid": 12,
    "started_at": "2025-01-01T00:00:00Z",
    "rpc_port": 7783,
    "data_dir": "/var/lib/kdf",
    "last_exit": {"code": 0, "at": "2025-01-01T00:00:00Z", "reason": "stopped"},
}


def test_import_pulls_in_no_server_or_transport() -> None:
    """Importing kdf_remote.api loads neither litestar, httpx nor another kdf_remote part."""
    probe = (
        "import sys, kdf_remote.api\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('litestar', 'httpx')\n"
        "    or (m.startswith('kdf_remote.') and not m.startswith('kdf_remote.api')))\n"
        "print(bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_responses_tolerate_fields_a_newer_daemon_adds() -> None:
    """A response with an unknown field (also in a nested struct) still decodes."""
    newer = {**STATUS, "new_field": 1, "limits": {"cpu": 1.5, "new_limit": 2}}
    body = msgspec.json.encode({"instances": [newer], "next_page": None})
    decoded = msgspec.json.decode(body, type=api.InstanceList)
    assert decoded.instances[0].limits == api.Limits(cpu=1.5)
    assert decoded.instances[0].started_at is not None
    assert decoded.instances[0].started_at.year == 2025


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (api.WorkerRequest, {"name": "w1", "unknown": True}),
        (api.UpdateRequest, {"version": "2.5.1", "sha256": "0" * 64, "typo_url": "x"}),
    ],
)
def test_request_bodies_forbid_unknown_fields(kind: type[object], body: dict[str, object]) -> None:
    """The daemon rejects a request body with a field it does not know (a typo is an error)."""
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(msgspec.json.encode(body), type=kind)


def test_request_bodies_validate_their_constraints() -> None:
    """Worker names and update checksums are checked when the daemon decodes them."""
    with pytest.raises(msgspec.ValidationError, match="name"):
        msgspec.json.decode(b'{"name": "Main"}', type=api.WorkerRequest)
    with pytest.raises(msgspec.ValidationError, match="sha256"):
        msgspec.json.decode(b'{"version": "2.5.1", "sha256": "abc"}', type=api.UpdateRequest)


def test_client_sends_only_what_it_sets() -> None:
    """A request body leaves out the fields at their default, so the daemon applies its own."""
    assert msgspec.json.decode(msgspec.json.encode(api.WorkerRequest(name="w1"))) == {"name": "w1"}
    request = api.UpdateRequest(version="2.5.1", sha256="a" * 64)
    assert msgspec.json.decode(msgspec.json.encode(request)) == {
        "version": "2.5.1",
        "sha256": "a" * 64,
    }


def test_missing_required_field_is_an_error() -> None:
    """A response without a field the contract requires does not decode (no silent default)."""
    partial = {key: value for key, value in STATUS.items() if key != "rpc_port"}
    with pytest.raises(msgspec.ValidationError, match="rpc_port"):
        msgspec.convert(partial, api.InstanceStatus)


@pytest.mark.parametrize(
    ("running", "outcome", "succeeded", "rolled_back"),
    [
        (True, None, False, False),
        (False, "updated", True, False),
        (False, "unchanged", True, False),
        (False, "rolled_back", False, True),
        (False, "failed", False, False),
    ],
)
def test_update_result_verdicts(
    running: bool, outcome: str | None, succeeded: bool, rolled_back: bool
) -> None:
    """`succeeded` and `rolled_back` read the outcome of a finished update."""
    result = msgspec.convert(
        {
            "id": "u1",
            "version": "2.5.1",
            "phase": "done",
            "running": running,
            "outcome": outcome,
            "steps": [],
            "started_at": "2025-01-01T00:00:00Z",
        },
        api.UpdateResult,
    )
    assert (result.succeeded, result.rolled_back) == (succeeded, rolled_back)
