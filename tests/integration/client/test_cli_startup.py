"""What `kdf-remote status --json` and `--help` load: the start-up path stays lean.

A regression that puts a heavy module back on the path (httpx's own CLI, rich, cyclopts'
completion machinery, other command modules) fails here rather than only in bench/bench_cli.py.
The commands run in a fresh interpreter through the console script's entry point (`main`), so
what is measured is what a user's `kdf-remote` process imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from kdf_remote.client.profiles import Profile, save_profile

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Runs `main()` with the given arguments, then reports the exit code and what was imported.
PROBE = """\
import json, sys
from kdf_remote.client.cli.app import main
sys.argv = ["kdf-remote", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
blocked = sorted(name for name, module in sys.modules.items() if module is None)
loaded = sorted(name for name, module in sys.modules.items() if module is not None)
print("PROBE " + json.dumps({"exit": code, "loaded": loaded, "blocked": blocked}))
"""

#: Off the path of every command that does not need them.
NEVER_AT_START = (
    "pulumi",
    "litestar",
    "kdf_remote.daemon",
    "click",  # httpx's own CLI
    "pygments",  # httpx's own CLI
    "cyclopts.completion",  # only `--install-completion` needs it
    "kdf_remote.client.cli.completion",
    "kdf_remote.client.cli.deploy",
    "kdf_remote.client.cli.profiles",
    "kdf_remote.client.cli.workers",
    "kdf_remote.client.cli.backups",
    "kdf_remote.client.local",
    "kdf_remote.client.local_deploy",
)


def probe(*args: str) -> tuple[int, list[str], list[str], str]:
    """Run the CLI in a fresh interpreter: (exit code, modules loaded, modules blocked, stdout)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert lines and lines[-1].startswith("PROBE "), (args, done.stdout[-500:], done.stderr[-500:])
    report = json.loads(lines[-1].removeprefix("PROBE "))
    return report["exit"], report["loaded"], report["blocked"], "\n".join(lines[:-1])


def offenders(loaded: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """Loaded modules that are one of `prefixes` or inside one of them."""
    return [m for m in loaded if any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_status_json_start_up_path(real_daemon: Any) -> None:
    """`status --json` talks to the daemon through httpx without httpx's CLI, rich or other
    commands' modules being imported."""
    save_profile(
        Profile(name="remote", url=real_daemon.url, api_key=real_daemon.api_key),
        ca_pem=real_daemon.ca_pem,
    )
    code, loaded, blocked, out = probe("status", "--json", "--profile", "remote")
    assert code == 0, out
    assert json.loads(out)["profile"] == "remote"
    # The request went through httpx (the library's mandated client) ...
    assert {"httpx", "httpcore"} <= set(loaded)
    # ... whose optional CLI module main() blocks; nothing else is blocked.
    assert blocked == ["httpx._main"]
    assert offenders(loaded, (*NEVER_AT_START, "rich")) == []


def test_help_start_up_path() -> None:
    """`--help` lists every command without importing the client library or any command."""
    code, loaded, _, out = probe("--help")
    assert code == 0
    for command in ("status", "profile", "deploy", "backup", "--install-completion"):
        assert command in out, command
    heavy = ("httpx", "httpcore", "msgspec", "yaml", "kdf_remote.client.cli.instances")
    assert offenders(loaded, (*NEVER_AT_START, *heavy)) == []
