"""Methods answering with key or seed material need the admin role on the REST RPC proxy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import DaemonFactory, startup_config

pytestmark = [pytest.mark.integration, pytest.mark.security]

OPERATOR_KEY = "it-operator-key-0123456789"


def _methods_seen(request_log: Path) -> list[str]:
    if not request_log.exists():
        return []
    return [json.loads(line)["method"] for line in request_log.read_text().splitlines()]


def test_operator_cannot_read_key_material_and_kdf_never_sees_the_call(
    daemons: DaemonFactory, tmp_path: Path
) -> None:
    """get_mnemonic / show_priv_key from an operator: 403, and the call never reaches KDF."""
    request_log = tmp_path / "kdf-requests.jsonl"
    binary = daemons.wrapper({"KDF_SIM_REQUEST_LOG": str(request_log)})
    config = daemons.write_config(binary=binary)
    config.write_text(
        config.read_text().replace(
            "api_keys: [",
            f"api_keys: [{{name: ops, role: operator, key: {OPERATOR_KEY}}}, ",
        )
    )
    daemon = daemons.start(config, "--stop-instances-on-exit")
    with daemon.client() as admin, daemon.client(OPERATOR_KEY) as operator:
        assert admin.post("/v1/instances/main/start", json=startup_config()).status_code == 200
        calls = [
            {"mmrpc": "2.0", "method": "get_mnemonic", "params": {"format": "plaintext"}},
            {"method": "show_priv_key", "coin": "KMD"},
            [{"method": "version"}, {"mmrpc": "2.0", "method": "get_mnemonic"}],
        ]
        for call in calls:
            refused = operator.post("/v1/instances/main/rpc", json=call)
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"] == "role_required"
            assert "admin" in refused.json()["detail"]
        assert "get_mnemonic" not in _methods_seen(request_log)
        assert "show_priv_key" not in _methods_seen(request_log)

        # Ordinary calls still go through for the operator.
        coins = operator.post("/v1/instances/main/rpc", json={"method": "get_enabled_coins"})
        assert coins.status_code == 200, coins.text

        # An admin may ask (e.g. to back the seed up): the call reaches KDF, and KDF's own
        # answer comes back (here KDF's error: a passphrase-mode node has no stored wallet).
        allowed = admin.post(
            "/v1/instances/main/rpc",
            json={"mmrpc": "2.0", "method": "get_mnemonic", "params": {"format": "plaintext"}},
        )
        assert allowed.json().get("mmrpc") == "2.0", allowed.text
        assert "get_mnemonic" in _methods_seen(request_log)
