"""`kdf-remote deploy|destroy --provider aws|do|custom` against the Automation API boundary.

The boundary (`kdf_remote.infra.automation`) is replaced by fakes that check every call against
the real functions' signatures, so the client and the boundary cannot drift apart unnoticed.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kdf_remote.client.cli.app import app
from kdf_remote.client.profiles import current_profile_name, load_profile
from kdf_remote.infra import automation

pytestmark = pytest.mark.unit

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBdeploytest\n-----END CERTIFICATE-----\n"
OUTPUTS: dict[str, Any] = {
    "daemon_url": "https://198.51.100.7:8000",
    "ca_cert_pem": CA_PEM,
    "api_key": "kdfr_" + "a1B2" * 10 + "c3D",
    "server_ip": "198.51.100.7",
    "region": "home-lab",
    "provider": "custom",
    "instance_id": "custom:198.51.100.7",
    "workers": [],
}


def run(args: list[str]) -> int:
    result = app(args, result_action="return_value")
    assert isinstance(result, int)
    return result


def _checked(
    real: Callable[..., Any], answer: Any, calls: list[dict[str, Any]]
) -> Callable[..., Any]:
    """A stand-in for ``real`` that refuses calls ``real`` would not accept."""

    def fake(*args: Any, **kwargs: Any) -> Any:
        bound = inspect.signature(real).bind(*args, **kwargs)
        calls.append(dict(bound.arguments))
        on_output = bound.arguments.get("on_output")
        if on_output is not None:
            on_output("Updating (custom-lab)")
        return answer

    return fake


def test_deploy_custom_imports_the_stack_outputs_as_a_profile(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """deploy --provider custom --stack X --json runs `up` for that stack and provider, then
    saves the outputs as profile X (URL, key, pinned CA), made current as the first one."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(automation, "up", _checked(automation.up, dict(OUTPUTS), calls))
    stack = ["--stack", "custom-lab", "--cwd", str(tmp_path)]
    code = run(["deploy", "--provider", "custom", *stack, "--json"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert [(c["stack"], c["provider"], c["work_dir"]) for c in calls] == [
        ("custom-lab", "custom", tmp_path)
    ]
    answer = json.loads(printed)
    assert (answer["profile"], answer["url"], answer["current"]) == (
        "custom-lab",
        OUTPUTS["daemon_url"],
        True,
    )
    profile = load_profile("custom-lab")
    assert (profile.url, profile.api_key) == (OUTPUTS["daemon_url"], OUTPUTS["api_key"])
    assert (profile.provider, profile.server_ip, profile.stack) == (
        "custom",
        "198.51.100.7",
        "custom-lab",
    )
    assert profile.ca_pem() == CA_PEM
    assert current_profile_name() == "custom-lab"


def test_destroy_custom_calls_destroy_for_the_stack(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """destroy --provider custom --stack X calls the boundary's destroy with matching arguments."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(automation, "destroy", _checked(automation.destroy, None, calls))
    assert run(["destroy", "--provider", "custom", "--stack", "custom-lab", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "provider": "custom",
        "stack": "custom-lab",
        "destroyed": True,
    }
    assert [(c["stack"], c.get("work_dir")) for c in calls] == [("custom-lab", None)]


@pytest.mark.parametrize("command", ["deploy", "destroy"])
def test_without_the_pulumi_cli_the_command_says_how_to_install_it(
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """With no `pulumi` on PATH the real boundary stops first; the CLI exits 2 with the hint."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert run([command, "--provider", "custom", "--stack", "custom-lab", "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["exit_code"] == 2
    assert "the pulumi CLI is needed for --provider custom" in error["message"]
    assert "https://www.pulumi.com/docs/iac/download-install/" in error["message"]
    assert current_profile_name() is None
