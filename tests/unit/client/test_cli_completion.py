"""`kdf-remote --install-completion`: registered by import path, still listed and still working."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdf_remote.client.cli.app import app

pytestmark = pytest.mark.unit


def test_help_lists_install_completion(capsys: pytest.CaptureFixture[str]) -> None:
    """The top-level help shows the command with its one-line description."""
    with pytest.raises(SystemExit) as info:
        app(["--help"])
    assert info.value.code == 0
    line = next(
        row for row in capsys.readouterr().out.splitlines() if "--install-completion" in row
    )
    assert "Install shell completion for this application." in line


def test_install_completion_writes_script_and_rc_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lazily loaded command writes a bash script naming our commands and sources it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    script = tmp_path / "kdf-remote.bash"
    app(
        ["--install-completion", "--shell", "bash", "--output", str(script)],
        result_action="return_value",
    )
    text = script.read_text()
    assert "kdf-remote" in text
    for command in ("status", "profile", "deploy"):
        assert command in text, command
    assert str(script) in (tmp_path / ".bashrc").read_text()
    assert str(script) in capsys.readouterr().out
