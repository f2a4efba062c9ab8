"""The `kdf-remote` command line: thin commands over `kdf_remote.client`.

Commands are registered by import path so that ``kdf-remote --help`` imports none of them (and
neither httpx nor rich's heavier parts); each module is loaded only when its command runs.
"""

from __future__ import annotations

import sys

from cyclopts import App

__all__ = ["app", "main"]

_PKG = "kdf_remote.client.cli"

app = App(
    name="kdf-remote",
    help="Run the Komodo DeFi Framework (KDF) on remote servers, or on this machine, and drive it.",
    version_flags=["--version"],
    help_format="rich",
)

_COMMANDS: tuple[tuple[str, str, str], ...] = (
    (
        "deploy",
        "deploy:deploy",
        "Provision a server (aws|do|custom) or a daemon on this machine (local).",
    ),
    ("destroy", "deploy:destroy", "Tear down what `deploy` created."),
    ("start", "instances:start", "Start a KDF instance and wait until it answers."),
    ("stop", "instances:stop", "Stop a KDF instance gracefully."),
    ("restart", "instances:restart", "Stop then start a KDF instance."),
    (
        "status",
        "instances:status",
        "Status of one instance, all instances, or every profile (--all).",
    ),
    ("logs", "instances:logs", "Show (and with -f follow) an instance's redacted log."),
    ("health", "instances:health", "Health of an instance; --watch for a live view."),
    (
        "update",
        "instances:update",
        "Install another KDF release on the daemon, rolling back on failure.",
    ),
    ("rpc", "instances:rpc", "Call a KDF RPC method through the daemon and print KDF's answer."),
)

for _name, _target, _help in _COMMANDS:
    app.command(f"{_PKG}.{_target}", name=_name, help=_help)

_GROUPS: tuple[tuple[str, str, tuple[tuple[str, str, str], ...]], ...] = (
    (
        "profile",
        "Manage connection profiles (stored in $XDG_CONFIG_HOME/kdf-remote/profiles).",
        (
            ("import", "profiles:import_", "Create a profile from Pulumi stack outputs."),
            ("add", "profiles:add", "Create a profile by hand (host, port, key, CA)."),
            ("list", "profiles:list_", "List profiles."),
            ("show", "profiles:show", "Show a profile (never its key)."),
            ("use", "profiles:use", "Make a profile the default."),
            ("remove", "profiles:remove", "Delete a profile and its CA file."),
        ),
    ),
    (
        "workers",
        "Manage worker instances on the daemon.",
        (
            ("list", "workers:list_", "List workers and the capacity left."),
            ("add", "workers:add", "Create and start a worker."),
            ("remove", "workers:remove", "Stop and remove a worker."),
        ),
    ),
    (
        "backup",
        "Back up and restore an instance's KDF data directory.",
        (
            ("create", "backups:create", "Back up an instance's data directory."),
            ("list", "backups:list_", "List an instance's backups."),
            ("restore", "backups:restore", "Restore a backup into an instance."),
        ),
    ),
)

for _group, _group_help, _subcommands in _GROUPS:
    _sub = App(name=_group, help=_group_help)
    for _name, _target, _help in _subcommands:
        _sub.command(f"{_PKG}.{_target}", name=_name, help=_help)
    app.command(_sub)

# Not `app.register_install_completion_command()`: that imports cyclopts' completion machinery on
# every run. The same command, registered by import path, is loaded only when it runs.
app.command(
    f"{_PKG}.completion:install_completion",
    name="--install-completion",
    help=(
        "Install shell completion for this application.\n\n"
        "Writes the completion script for your shell (--shell, else the detected one) where that "
        "shell looks for it (or to --output) and adds the line that loads it to the shell's "
        "start-up file; restart the shell afterwards."
    ),
)


def main() -> None:
    """Console-script entry point."""
    # httpx/__init__ imports its own optional CLI, `httpx._main` (click, rich, pygments: ~35 ms),
    # whenever click and rich are installed. A None entry makes that import fail, which httpx
    # handles (it is its path for "httpx[cli] not installed"); only `httpx.main` is affected,
    # which we never call. Done here, in our own process only, never in the library an app
    # imports. tests/integration/client/test_cli_startup.py checks it stays the only block.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    result = app(sys.argv[1:])
    sys.exit(result if isinstance(result, int) else 0)
