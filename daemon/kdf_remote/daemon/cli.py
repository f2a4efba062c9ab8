"""``kdf-remote-daemon``: serve the REST API, validate a configuration, manage keys and TLS.

    kdf-remote-daemon --config /etc/kdf-remote/daemon.yaml [--stop-instances-on-exit]
    kdf-remote-daemon check-config /etc/kdf-remote/daemon.yaml
    kdf-remote-daemon init --state-dir DIR --kdf-binary PATH [--host H] [--port P] [--san N]...
    kdf-remote-daemon keys add|list|revoke|init ...  /  tls init ...  /  audit verify ...

The security commands live in :mod:`kdf_remote.daemon.security.cli` and are imported only when
one of them runs. Exit codes: 0 ok, 1 invalid configuration or failed start, 2 usage error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter

from kdf_remote.daemon.security.commands import register
from kdf_remote.daemon.version import daemon_version

__all__ = ["app", "check_config", "main", "run"]

DEFAULT_CONFIG = Path("/etc/kdf-remote/daemon.yaml")

app = App(
    name="kdf-remote-daemon",
    help="The kdf-remote daemon: supervises KDF on this server and serves its REST API.",
    version=daemon_version,
)
register(app)


def _load(path: Path) -> object:
    from kdf_remote.daemon.settings import SettingsError, load_settings

    try:
        return load_settings(path)
    except SettingsError as exc:
        print(f"invalid configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _environment_problems(settings: object) -> list[str]:
    """Problems only visible on this machine: files that must exist."""
    from kdf_remote.daemon.settings import Settings

    assert isinstance(settings, Settings)
    problems = []
    if not settings.kdf.binary_path.is_file():
        problems.append(f"kdf.binary_path: {settings.kdf.binary_path} is not a file")
    ssl = settings.security.ssl
    if ssl is not None:
        for key, path in (("cert_path", ssl.cert_path), ("key_path", ssl.key_path)):
            if not path.is_file():
                problems.append(f"security.ssl.{key}: {path} is not a file")
    return problems


@app.command(name="check-config")
def check_config(file: Path, /) -> int:
    """Validate a configuration file, and the key and TLS files it names, without starting.

    Exit 1 when the daemon would refuse to start (bad values, missing or weak JWT key, unsafe
    key files, plain HTTP off loopback); files it only uses later are warnings.

    Parameters
    ----------
    file
        The daemon configuration (YAML).
    """
    from kdf_remote.daemon.security.preflight import check_security
    from kdf_remote.daemon.settings import Settings

    settings = _load(file)
    assert isinstance(settings, Settings)
    report = check_security(settings)
    for warning in [*_environment_problems(settings), *report.warnings]:
        print(f"{file}: warning: {warning}", file=sys.stderr)
    for error in report.errors:
        print(f"{file}: error: {error}", file=sys.stderr)
    if report.errors:
        return 1
    print(f"{file}: OK")
    return 0


@app.default
def run(
    *,
    config: Annotated[Path, Parameter(name=["--config", "-c"])] = DEFAULT_CONFIG,
    stop_instances_on_exit: bool = False,
) -> int:
    """Serve the REST API until SIGTERM or SIGINT.

    Parameters
    ----------
    config
        The daemon configuration (YAML).
    stop_instances_on_exit
        Stop every KDF instance when the daemon exits (by default KDF keeps running and the
        next daemon start re-adopts it).
    """
    from kdf_remote.daemon.app import create_app
    from kdf_remote.daemon.daemon_log import configure_logging
    from kdf_remote.daemon.security.errors import SecurityConfigError
    from kdf_remote.daemon.server import serve
    from kdf_remote.daemon.settings import Settings

    settings = _load(config)
    assert isinstance(settings, Settings)
    configure_logging(settings.daemon.log_level, json_logs=settings.daemon.json_logs)
    for problem in _environment_problems(settings):
        print(f"{config}: warning: {problem}", file=sys.stderr)
    try:
        daemon = create_app(settings, stop_instances_on_exit=stop_instances_on_exit or None)
        serve(settings, daemon)
    except SecurityConfigError as exc:
        print(f"{config}: refusing to start: {exc}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    """Console entry point."""
    # httpx (release downloads) imports its own optional CLI, `httpx._main`, whenever click and
    # rich are installed: rich and pygments, about 3 MiB the daemon would keep resident for
    # nothing. A None entry makes that import fail, which httpx handles (its path for
    # "httpx[cli] not installed"); only `httpx.main` is affected, which we never call. The
    # `kdf-remote` CLI does the same for its start-up time.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    result = app()
    raise SystemExit(result if isinstance(result, int) else 0)
