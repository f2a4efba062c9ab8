"""Schemathesis over the served OpenAPI document, in-process, against a kdf-sim-backed instance.

Every operation is fuzzed with a valid admin key (and probed without one): no server error of
the daemon's own, and every response conforms to the document (status, content type, schema).

Two kinds of operations need narrower checks. A startup config that fits the JSON schema can
still break KDF's cross-field rules (P2P precheck, password policy), so "schema-valid input is
accepted" does not hold for start, restart and config. And the RPC proxy passes KDF's answer
through unchanged, so KDF decides what a valid call is (its 400s for valid-looking bodies, its
200 with per-item errors for a batch, its HTTP 500 for legacy errors). For that operation the
data-acceptance checks are replaced by :func:`_no_daemon_failure`, which still fails on any
error the daemon itself produced.
"""

from __future__ import annotations

import itertools
import json
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, not_a_server_error
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from _loopback import free_port
from kdf_remote.daemon.app import create_app
from kdf_remote.daemon.security.tokens import create_jwt_key_file
from kdf_remote.daemon.settings import parse_settings

from .conftest import ADMIN_KEY, startup_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HEADERS = {"X-API-Key": ADMIN_KEY}
# The instance under test; unknown names (404) are covered elsewhere.
MAIN = {"name": "main"}
RPC_PATH = "/v1/instances/{name}/rpc"
# A schema-valid startup config can still break KDF's own cross-field rules (P2P precheck,
# password policy), which a JSON schema cannot express: those 400s are correct.
CONFIG_PATHS = frozenset(
    f"/v1/instances/{{name}}/{action}" for action in ("start", "restart", "config")
)
# Revoking "the token sent with this request" needs a request made with a token: an API key
# with an empty body is schema-valid and correctly refused (400).
REVOKE_PATH = "/v1/auth/revoke"
# Issue 7's mutations depend on state a schema cannot express (workers disabled here, an
# update store not configured, backup ids that exist): their 404s and 409s are correct.
STATEFUL_PATHS = frozenset(
    {
        "/v1/workers",
        "/v1/workers/{name}",
        "/v1/kdf/update",
        "/v1/instances/{name}/backups",
        "/v1/instances/{name}/backups/{backup_id}/restore",
    }
)
EXAMPLES = 25


@pytest.fixture
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The daemon app in-process with ``main`` running on kdf-sim, and its loaded schema."""
    root = tmp_path_factory.mktemp("fuzz")
    sim = Path(sys.executable).parent / "kdf-sim"
    settings = parse_settings(
        f"daemon: {{state_dir: {root / 'state'}, health_check_interval: 100ms}}\n"
        f"kdf: {{binary_path: {sim}, data_dir: {root / 'data'}, rpc_port: {free_port()}}}\n"
        # Generated worker requests must not spawn KDF processes on real ports.
        "worker_support: {enabled: false}\n"
        "security:\n"
        f"  api_keys: [{ADMIN_KEY}]\n"
        "  max_stream_duration: 300ms\n"
        "  max_log_tail: 200\n"
        # Hundreds of requests from one client, some with bad keys on purpose: no throttling.
        "  rate_limit: {requests_per_minute: 1000000, auth_per_minute: 1000000,"
        " lockout_after: 1000000}\n"
    )
    create_jwt_key_file(settings.security.jwt.key_file)
    app = create_app(settings, stop_instances_on_exit=True)
    _start_main(app)
    schema = schemathesis.openapi.from_asgi("/v1/schema/openapi.json", app, headers=HEADERS)

    @schema.auth()
    class _ApiKey:
        """Every generated case carries the admin key (schemathesis also probes without it)."""

        def get(self, case: Any, context: Any) -> str:
            return ADMIN_KEY

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "X-API-Key": data}

    try:
        yield schema
    finally:
        schemathesis_asgi.shutdown_lifespans()


def _start_main(app: Any) -> None:
    with schemathesis_asgi.get_client(app) as client:
        started = client.post(
            "/v1/instances/main/start", data=json.dumps(startup_config()), headers=HEADERS
        )
        assert started.status_code == 200, started.text


def _no_daemon_failure(ctx: Any, response: Any, case: Any) -> None:
    """A 5xx on the proxy must be KDF's own answer, never the daemon's internal error."""
    if response.status_code >= 500:
        body = json.loads(response.content or b"null")
        own = isinstance(body, dict) and set(body) == {"error", "detail"}
        assert not own, f"the daemon failed: {body}"
        assert response.status_code == 500, response.status_code


def _fuzz(case: Any) -> None:
    if case.path == RPC_PATH:
        case.call_and_validate(
            excluded_checks=[not_a_server_error, positive_data_acceptance, negative_data_rejection],
            additional_checks=[_no_daemon_failure],
        )
    elif case.path in CONFIG_PATHS or case.path == REVOKE_PATH or case.path in STATEFUL_PATHS:
        case.call_and_validate(excluded_checks=[positive_data_acceptance])
    else:
        case.call_and_validate()


def test_api_conforms_to_its_document(api_schema: Any) -> None:
    """No server error and no schema violation on any operation, valid and invalid inputs."""
    # One test for both modes: schemathesis ends the app's lifespan when a test ends.
    failures: dict[str, str] = {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    # 10 of the daemon, 3 of the security layer, 1 of kdf_compat, 10 of workers, capacity,
    # metrics, KDF updates and backups.
    assert len(operations) == 24
    # Stop last, so the other operations (RPC above all) meet a running KDF.
    operations.sort(key=lambda op: op.path.endswith("/stop"))
    for mode, operation in itertools.product(
        (GenerationMode.POSITIVE, GenerationMode.NEGATIVE), operations
    ):
        if operation is operations[0]:
            _start_main(api_schema.app)
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=MAIN)

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        def run(case: Any) -> None:
            _fuzz(case)

        try:
            run()
        except Unsatisfiable:
            continue  # nothing to make invalid (GET /v1/health has no input)
        except Exception as exc:  # collected so one run reports every failing operation
            failures[f"{mode.value} {operation.label}"] = "".join(traceback.format_exception(exc))
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
