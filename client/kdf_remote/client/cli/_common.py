"""What every command shares: the global options, output, exit codes and error reporting.

Exit codes (design.md): 0 ok, 1 the operation failed, 2 usage error (bad arguments, no or bad
profile), 3 cannot reach or authenticate to the daemon. Under ``--json`` an error is printed on
stdout as ``{"error": {"code", "message", "exit_code"}}`` so that scripts read one stream.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from cyclopts import Parameter

from kdf_remote.client import errors

if TYPE_CHECKING:
    from rich.console import Console

    from kdf_remote.client.profiles import Profile

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


@Parameter(name="*")
@dataclass(frozen=True)
class Options:
    """Options every command takes."""

    profile: str | None = None
    """Profile name (or path of a profile/client YAML file). Default: KDF_REMOTE_PROFILE, then
    the one chosen with `profile use`, then the only one."""

    json: bool = False
    """Print machine-readable JSON (documented in docs/cli.md) and no progress display."""


DEFAULT = Options()


class UsageError(Exception):
    """A command-level usage mistake (exit 2), e.g. a bad JSON argument."""


def exit_code_for(exc: BaseException) -> int:
    """The exit code an error means."""
    if isinstance(exc, UsageError | errors.ConfigError):
        return EXIT_USAGE
    if errors.is_auth_failure(exc):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def error_code_for(exc: BaseException) -> str:
    """A stable machine code for an error in `--json` output."""
    if isinstance(exc, errors.ApiError):
        return exc.code
    if isinstance(exc, UsageError):
        return "usage"
    if isinstance(exc, errors.ConfigError):
        return "config"
    if isinstance(exc, errors.ConnectError):
        return "unreachable"
    if isinstance(exc, errors.DaemonTimeoutError):
        return "timeout"
    if isinstance(exc, errors.ProtocolError):
        return "protocol"
    if isinstance(exc, errors.TransportError):
        return "transport"
    if isinstance(exc, errors.Unsupported):
        return "unsupported"
    return "failed"


def _hint(exc: BaseException) -> str:
    if isinstance(exc, errors.Unauthorized):
        return " (the profile's API key was refused: check it, or re-import the profile)"
    if isinstance(exc, errors.Forbidden):
        return " (the key's role or this address is not allowed)"
    if isinstance(exc, errors.ConnectError) and "TLS" not in str(exc):
        return " (is the daemon running? `kdf-remote status` shows the profile in use)"
    return ""


def report_error(exc: BaseException, options: Options) -> int:
    """Print `exc` for a human (stderr) or as JSON (stdout); return its exit code."""
    code = exit_code_for(exc)
    message = str(exc) or type(exc).__name__
    if options.json:
        print_json({"error": {"code": error_code_for(exc), "message": message, "exit_code": code}})
    else:
        err_console().print(f"[bold red]error:[/] {escape(message)}{_hint(exc)}")
    return code


def run(options: Options, body: Callable[[], int | None]) -> int:
    """Run a command body, turning library errors into exit codes; Ctrl-C ends quietly."""
    try:
        return body() or EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK
    except (errors.KdfRemoteError, UsageError) as exc:
        return report_error(exc, options)


# --- output -------------------------------------------------------------------------------------


def to_builtins(value: Any) -> Any:
    """msgspec Structs (and lists of them) as plain JSON-ready values."""
    return msgspec.to_builtins(value)


def print_json(value: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(msgspec.json.encode(to_builtins(value)).decode() + "\n")
    sys.stdout.flush()


def print_json_line(value: Any) -> None:
    """One NDJSON line on stdout (streams: logs -f, health --watch)."""
    print_json(value)


_consoles: dict[str, Console] = {}


def console() -> Console:
    """The rich console on stdout (imported on first use: keeps start-up fast)."""
    if "out" not in _consoles:
        from rich.console import Console

        _consoles["out"] = Console(highlight=False)
    return _consoles["out"]


def err_console() -> Console:
    """The rich console on stderr."""
    if "err" not in _consoles:
        from rich.console import Console

        _consoles["err"] = Console(stderr=True, highlight=False)
    return _consoles["err"]


def escape(text: str) -> str:
    """Escape rich markup in user or daemon supplied text."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def interactive(options: Options) -> bool:
    """Progress displays only for a human at a terminal."""
    return not options.json and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


@contextmanager
def progress(options: Options, message: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr while a long operation runs; silent under --json or off a TTY.

    Yields a function that updates the message.
    """
    if not interactive(options):
        yield lambda _text: None
        return
    with err_console().status(message) as status:
        yield status.update


def note(options: Options, message: str) -> None:
    """An informational line for humans (stderr), never under --json."""
    if not options.json:
        err_console().print(message)


def current_profile(options: Options) -> Profile:
    """The profile a command acts on."""
    from kdf_remote.client.profiles import resolve_profile

    return resolve_profile(options.profile)
