"""The kdf-remote CLI in-process: parsing, output, --json shapes and exit codes."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from kdf_remote.client._core import DEFAULT_STARTUP_CONFIG
from kdf_remote.client.cli.app import app
from kdf_remote.client.profiles import Profile, load_profile, profiles_dir, save_profile

pytestmark = pytest.mark.unit


def run(args: list[str]) -> int:
    result = app(args, result_action="return_value")
    assert isinstance(result, int)
    return result


def out_json(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


class TestParsing:
    def test_bad_arguments_exit_2(self) -> None:
        """Unknown options and missing arguments are usage errors (exit 2)."""
        for args in (["status", "--bogus"], ["rpc"], ["logs", "main", "-n", "many"], ["nope"]):
            with pytest.raises(SystemExit) as info:
                app(args, result_action="return_value")
            assert info.value.code == 2, args

    def test_shared_options_parse(self) -> None:
        """Every command takes --profile and --json."""
        for command in (
            ["status"],
            ["start", "main"],
            ["logs", "main", "-f"],
            ["rpc", "version"],
            ["workers", "list"],
            ["profile", "list"],
            ["deploy"],
        ):
            _, bound, _ = app.parse_args([*command, "--profile", "x", "--json"])
            options = bound.arguments["options"]
            assert (options.profile, options.json) == ("x", True), command

    def test_bad_json_params_exit_2(
        self, daemon_profile: Profile, wire_cli: Any, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """rpc with params that are not JSON is a usage error."""
        assert run(["rpc", "my_balance", "{not json", "--json"]) == 2
        error = out_json(capsys)["error"]
        assert (error["code"], error["exit_code"]) == ("usage", 2)
        assert error["message"].startswith("params: not valid JSON")


class TestInstanceCommands:
    def test_status_json_shape(
        self, daemon_profile: Profile, wire_cli: Any, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`status --json` prints {"profile", "instances": [status...]}."""
        assert run(["status", "--json"]) == 0
        doc = out_json(capsys)
        assert doc["profile"] == "fake"
        assert doc["instances"][0]["name"] == "main"
        assert doc["instances"][0]["state"] == "stopped"

    def test_start_rpc_stop(
        self, daemon_profile: Profile, wire_cli: Any, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """start (default config), rpc version, stop: JSON output and exit codes."""
        fake = wire_cli()
        assert run(["start", "main", "--json"]) == 0
        assert out_json(capsys)["state"] == "running"
        assert fake.stored_config == DEFAULT_STARTUP_CONFIG
        assert run(["rpc", "version", "--json"]) == 0
        assert out_json(capsys)["result"] == "2.5.1-beta_kdfsim0"
        assert run(["rpc", "no_such_method", "--json"]) == 1
        assert run(["stop", "main", "--json"]) == 0

    def test_unknown_instance_exit_1(
        self, daemon_profile: Profile, wire_cli: Any, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An unknown instance is an operation failure (exit 1) with the daemon's code."""
        assert run(["status", "ghost", "--json"]) == 1
        assert out_json(capsys)["error"]["code"] == "not_found"

    def test_daemon_down_exit_3(
        self, daemon_profile: Profile, wire_cli: Any, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A daemon that cannot be reached is exit 3 with a clear message."""
        wire_cli().down = True
        assert run(["status"]) == 3
        err = capsys.readouterr().err
        assert "cannot reach the daemon at http://127.0.0.1:8000" in err

    def test_wrong_key_exit_3(self, wire_cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
        """A refused key is exit 3 ("cannot authenticate")."""
        save_profile(Profile(name="bad", url="http://127.0.0.1:8000", api_key="kdfr_wrong"))
        assert run(["status", "--profile", "bad", "--json"]) == 3
        assert out_json(capsys)["error"]["code"] == "unauthorized"

    def test_no_profile_exit_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """With no profile at all the CLI says how to make one (exit 2)."""
        assert run(["status"]) == 2
        assert "deploy --provider local" in capsys.readouterr().err

    def test_logs_json_lines(
        self, daemon_profile: Profile, wire_cli: Any, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """logs --json prints one JSON object per line."""
        assert run(["logs", "main", "-n", "2", "--json"]) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert [x["line"] for x in lines] == ["line one", "line two"]
        assert run(["logs", "main", "-f"]) == 0
        assert capsys.readouterr().out.splitlines() == ["line one", "line two"]

    def test_health_json_and_exit(
        self, daemon_profile: Profile, wire_cli: Any, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """health --json prints the sample; an unhealthy instance exits 1."""
        assert run(["health", "main", "--json"]) == 1
        assert out_json(capsys)["healthy"] is False

    def test_status_all(self, wire_cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
        """status --all queries every profile; an unreachable one makes the exit code 3."""
        for name in ("one", "two"):
            save_profile(Profile(name=name, url="http://127.0.0.1:8000", api_key=wire_api_key()))
        save_profile(Profile(name="three", url="http://127.0.0.1:8000", api_key="kdfr_wrong"))
        assert run(["status", "--all", "--json"]) == 3
        doc = out_json(capsys)
        by_name = {p["profile"]: p for p in doc["profiles"]}
        assert by_name["one"]["ok"] and by_name["one"]["instances"][0]["name"] == "main"
        assert not by_name["three"]["ok"]
        assert by_name["three"]["error"]["code"] == "unauthorized"

    def test_status_all_rejects_instance(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--all with an instance is a usage error."""
        assert run(["status", "main", "--all"]) == 2


def wire_api_key() -> str:
    return "kdfr_" + "k" * 43


class TestProfileCommands:
    def test_import_file_show_never_prints_key(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """profile import --file creates a 0600 profile; show hides the key."""
        outputs = tmp_path / "outputs.json"
        outputs.write_text(
            json.dumps(
                {
                    "daemon_url": "https://203.0.113.5:8000",
                    "ca_cert_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                    "api_key": "kdfr_supersecret",
                    "server_ip": "203.0.113.5",
                    "region": "eu-west-1",
                    "provider": "aws",
                    "instance_id": "i-1",
                    "workers": [],
                }
            )
        )
        assert run(["profile", "import", "--file", str(outputs), "--name", "prod", "--json"]) == 0
        assert out_json(capsys)["current"] is True
        assert stat.S_IMODE((profiles_dir() / "prod.yaml").stat().st_mode) == 0o600
        assert run(["profile", "show", "prod", "--json"]) == 0
        shown = capsys.readouterr().out
        assert "supersecret" not in shown
        assert json.loads(shown)["has_api_key"] is True
        assert run(["profile", "show", "prod"]) == 0
        assert "supersecret" not in capsys.readouterr().out

    def test_import_stack_runs_pulumi(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """profile import --stack runs `pulumi stack output --json --show-secrets --stack NAME`."""
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        log = tmp_path / "argv"
        fake = bin_dir / "pulumi"
        fake.write_text(
            f"#!{sys.executable}\nimport sys, json\n"
            f"open({str(log)!r}, 'w').write(' '.join(sys.argv[1:]))\n"
            "print(json.dumps({'daemon_url': 'https://198.51.100.7:8000', 'api_key': 'kdfr_k'}))\n"
        )
        fake.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        assert run(["profile", "import", "--stack", "org/staging", "--json"]) == 0
        assert log.read_text() == "stack output --json --show-secrets --stack org/staging"
        assert load_profile("staging").url == "https://198.51.100.7:8000"

    def test_import_needs_one_source(self, capsys: pytest.CaptureFixture[str]) -> None:
        """import without --stack or --file is a usage error."""
        assert run(["profile", "import"]) == 2

    def test_add_reads_key_from_file_not_argv(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """profile add takes the key from a file (never from the command line)."""
        key_file = tmp_path / "key"
        key_file.write_text("kdfr_fromfile\n")
        assert (
            run(
                [
                    "profile",
                    "add",
                    "box",
                    "--host",
                    "10.0.0.5",
                    "--port",
                    "8443",
                    "--key-file",
                    str(key_file),
                ]
            )
            == 0
        )
        profile = load_profile("box")
        assert (profile.url, profile.api_key) == ("https://10.0.0.5:8443", "kdfr_fromfile")
        assert (
            run(
                [
                    "profile",
                    "add",
                    "plain",
                    "--host",
                    "10.0.0.5",
                    "--http",
                    "--key-file",
                    str(key_file),
                ]
            )
            == 2
        )

    def test_list_use_remove(self, capsys: pytest.CaptureFixture[str]) -> None:
        """list marks the default; use switches it; remove deletes."""
        save_profile(Profile(name="a", url="https://a.example:1"))
        save_profile(Profile(name="b", url="https://b.example:1"))
        assert run(["profile", "use", "b"]) == 0
        capsys.readouterr()
        assert run(["profile", "list", "--json"]) == 0
        rows = out_json(capsys)["profiles"]
        assert [(r["name"], r["current"]) for r in rows] == [("a", False), ("b", True)]
        assert run(["profile", "remove", "a", "--json"]) == 0
        assert out_json(capsys) == {"removed": "a"}
        assert run(["profile", "use", "a"]) == 2
