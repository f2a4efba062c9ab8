"""The Automation API boundary `kdf-remote deploy` / `destroy` call."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from kdf_remote.infra import automation

pytestmark = pytest.mark.unit


def test_missing_cli_raises_pulumi_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `pulumi` on PATH every entry point says so, and how to install it."""
    monkeypatch.setenv("PATH", "/nonexistent")
    for call in (
        lambda: automation.up("dev", "aws", {}),
        lambda: automation.destroy("dev"),
        lambda: automation.outputs("dev"),
    ):
        with pytest.raises(automation.PulumiNotInstalled) as caught:
            call()
        assert "pulumi" in str(caught.value) and "install" in str(caught.value).lower()
        assert isinstance(caught.value, automation.InfraError)


@dataclass
class _Value:
    value: Any
    secret: bool = False


@dataclass
class _FakeStack:
    config: dict[str, auto.ConfigValue] = field(default_factory=dict)
    destroyed: bool = False
    fail_with: Exception | None = None

    def set_all_config(self, config: dict[str, auto.ConfigValue]) -> None:
        self.config.update(config)

    def up(self, **kwargs: Any) -> Any:
        if self.fail_with is not None:
            raise self.fail_with
        kwargs["on_output"]("Updating (dev)")

        @dataclass
        class Result:
            outputs: dict[str, _Value]

        return Result(
            outputs={
                "daemon_url": _Value("https://198.51.100.7:8000"),
                "api_key": _Value("k", True),
            }
        )

    def destroy(self, **kwargs: Any) -> None:
        self.destroyed = True

    def outputs(self) -> dict[str, _Value]:
        return {"server_ip": _Value("198.51.100.7")}


def test_up_passes_namespaced_config_and_returns_plain_outputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Config keys get the kdf-remote namespace, values JSON text; outputs come back plain."""
    stack = _FakeStack()
    monkeypatch.setattr(automation, "_stack", lambda name, create, work_dir=None: stack)
    lines: list[str] = []
    result = automation.up(
        "dev",
        "do",
        {
            "region": "fra1",
            "allowed_ips": ["203.0.113.7/32"],
            "p2p": {"enabled": True},
            "ssh_private_key": "KEY",
            "digitalocean:token": "dop_v1_x",
        },
        on_output=lines.append,
    )
    assert result == {"daemon_url": "https://198.51.100.7:8000", "api_key": "k"}
    assert lines == ["Updating (dev)"]
    config = {k: (v.value, v.secret) for k, v in stack.config.items()}
    assert config["kdf-remote:provider"] == ("do", False)
    assert config["kdf-remote:region"] == ("fra1", False)
    assert config["kdf-remote:allowed_ips"] == ('["203.0.113.7/32"]', False)
    assert config["kdf-remote:p2p"] == ('{"enabled": true}', False)
    assert config["kdf-remote:ssh_private_key"] == ("KEY", True)
    assert config["digitalocean:token"] == ("dop_v1_x", True)


def test_engine_failure_becomes_deploy_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed `pulumi up` surfaces as DeployError carrying the engine's message."""
    failure = auto.CommandError(
        auto.CommandResult(stdout="", stderr="error: bootstrap failed", code=1)
    )
    monkeypatch.setattr(
        automation, "_stack", lambda name, create, work_dir=None: _FakeStack(fail_with=failure)
    )
    with pytest.raises(automation.DeployError, match="bootstrap failed"):
        automation.up("dev", "aws", {})


def test_destroy_and_outputs_use_the_existing_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """destroy() and outputs() select (never create) the stack."""
    stack = _FakeStack()
    calls: list[tuple[str, bool, Path | None]] = []

    def select(name: str, create: bool, work_dir: Path | None = None) -> _FakeStack:
        calls.append((name, create, work_dir))
        return stack

    monkeypatch.setattr(automation, "_stack", select)
    automation.destroy("dev", work_dir=Path("/srv/project"))
    assert stack.destroyed
    assert automation.outputs("dev") == {"server_ip": "198.51.100.7"}
    assert calls == [("dev", False, Path("/srv/project")), ("dev", False, None)]


def test_project_dir_is_the_one_holding_this_projects_pulumi_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """work_dir must hold kdf-remote's Pulumi.yaml; without one, the cwd is used only if it does."""
    checkout = Path(__file__).resolve().parents[2]
    assert automation._project_dir(checkout) == checkout
    other = tmp_path / "other"
    other.mkdir()
    (other / "Pulumi.yaml").write_text("name: someone-else\nruntime: python\n")
    with pytest.raises(automation.InfraError, match=r"no Pulumi\.yaml of the kdf-remote project"):
        automation._project_dir(other)
    monkeypatch.chdir(other)
    assert automation._project_dir(None) is None
    monkeypatch.chdir(checkout)
    assert automation._project_dir(None) == checkout
