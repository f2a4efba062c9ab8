"""Instance commands: start, stop, restart, status, logs, health, update, rpc."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from cyclopts import Parameter

from kdf_remote.client.cli._common import (
    DEFAULT,
    EXIT_FAILED,
    EXIT_OK,
    Options,
    UsageError,
    console,
    current_profile,
    error_code_for,
    escape,
    exit_code_for,
    interactive,
    note,
    print_json,
    print_json_line,
    progress,
    run,
)

if TYPE_CHECKING:
    import asyncio

    from kdf_remote.client._sync import RemoteKdfController
    from kdf_remote.client.connect import KdfController
    from kdf_remote.client.models import HealthEvent, InstanceStatus
    from kdf_remote.client.profiles import Profile

__all__ = ["health", "logs", "restart", "rpc", "start", "status", "stop", "update"]

_SETTLED = ("running", "failed", "stopped")


def _controller(options: Options) -> KdfController:
    from kdf_remote.client.connect import connect

    # One-shot commands send the API key itself: a token exchange would double the round trips
    # for a token used once (long-lived streams exchange it, see `_stream_controller`).
    return connect(current_profile(options), token_exchange=False)


def _stream_controller(options: Options) -> KdfController:
    from kdf_remote.client.connect import connect

    return connect(current_profile(options))


def remote_controller(options: Options) -> RemoteKdfController:
    """A daemon controller; `Unsupported` for a local profile (workers, updates, backups)."""
    from kdf_remote.client._sync import RemoteKdfController
    from kdf_remote.client.errors import Unsupported

    profile = current_profile(options)
    if profile.kind != "daemon":
        raise Unsupported(f"profile {profile.name!r} is a local profile: this needs a daemon")
    return RemoteKdfController.from_profile(profile, token_exchange=False)


def _show_status(options: Options, status: InstanceStatus) -> None:
    if options.json:
        print_json(status)
        return
    from kdf_remote.client.cli.render import instances_table

    console().print(instances_table([status]))


def read_config(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        raw = msgspec.json.decode(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot be read: {exc.strerror}") from None
    except msgspec.DecodeError as exc:
        raise UsageError(f"--config {path}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"--config {path}: expected a JSON object (a KDF startup config)")
    return raw


def _wait_ready(
    kdf: KdfController, options: Options, instance: str, timeout: float
) -> InstanceStatus:
    with progress(options, f"waiting for {instance} to answer...") as update:
        status = kdf.wait_until(_SETTLED, instance=instance, timeout=timeout)
        update(f"{instance} is {status.state}")
    return status


def start(
    instance: str = "main",
    /,
    *,
    config: Path | None = None,
    wait: bool = True,
    timeout: float = 60.0,
    options: Options = DEFAULT,
) -> int:
    """Start a KDF instance and wait until it answers.

    Parameters
    ----------
    instance
        Instance name (`main` or a worker).
    config
        JSON file with the KDF startup config. Without it the daemon's stored config is used, or,
        when none is stored, `{"gui": "kdf-remote", "netid": 8762, "disable_p2p": true}`
        (the daemon generates the rpc_password).
    wait
        Wait until KDF answers (state `running`) or the start fails.
    timeout
        Seconds to wait for readiness.
    """

    def body() -> int:
        startup = read_config(config)
        with _controller(options) as kdf:
            with progress(options, f"starting {instance}..."):
                status = (
                    kdf.start_kdf(startup, instance=instance)
                    if startup is not None
                    else kdf.start_default(instance=instance)
                )
            if wait and status.state not in _SETTLED:
                status = _wait_ready(kdf, options, instance, timeout)
        _show_status(options, status)
        return EXIT_OK if status.state == "running" or not wait else EXIT_FAILED

    return run(options, body)


def stop(instance: str = "main", /, *, options: Options = DEFAULT) -> int:
    """Stop a KDF instance gracefully (KDF `stop`, then SIGTERM, then SIGKILL).

    Parameters
    ----------
    instance
        Instance name.
    """

    def body() -> int:
        with _controller(options) as kdf, progress(options, f"stopping {instance}..."):
            status = kdf.stop_kdf(instance=instance)
        _show_status(options, status)
        return EXIT_OK

    return run(options, body)


def restart(
    instance: str = "main",
    /,
    *,
    config: Path | None = None,
    wait: bool = True,
    timeout: float = 60.0,
    options: Options = DEFAULT,
) -> int:
    """Stop then start a KDF instance.

    Parameters
    ----------
    instance
        Instance name.
    config
        JSON file with a new KDF startup config (default: the stored one).
    wait
        Wait until KDF answers again.
    timeout
        Seconds to wait for readiness.
    """

    def body() -> int:
        startup = read_config(config)
        with _controller(options) as kdf:
            with progress(options, f"restarting {instance}..."):
                status = kdf.restart(startup, instance=instance)
            if wait and status.state not in _SETTLED:
                status = _wait_ready(kdf, options, instance, timeout)
        _show_status(options, status)
        return EXIT_OK if status.state == "running" or not wait else EXIT_FAILED

    return run(options, body)


# --- status -------------------------------------------------------------------------------------


def status(
    instance: str | None = None,
    /,
    *,
    all_profiles: Annotated[bool, Parameter(name=["--all", "-a"])] = False,
    options: Options = DEFAULT,
) -> int:
    """Status of one instance, every instance of the profile, or of every profile (--all).

    Parameters
    ----------
    instance
        Instance name; all instances of the profile when omitted.
    all_profiles
        Query every stored profile concurrently.
    """
    if all_profiles:
        if instance is not None or options.profile is not None:
            return run(options, _raise(UsageError("--all takes no instance and no --profile")))
        return run(options, lambda: _status_all(options))

    def body() -> int:
        with _controller(options) as kdf:
            statuses = [kdf.status(instance)] if instance else kdf.instances()
            name = kdf.name
        if options.json:
            if instance:
                print_json(statuses[0])
            else:
                print_json({"profile": name, "instances": statuses})
            return EXIT_OK
        from kdf_remote.client.cli.render import instances_table

        console().print(instances_table(statuses, title=None if instance else f"profile {name}"))
        return EXIT_OK

    return run(options, body)


def _raise(exc: Exception) -> Any:
    def body() -> int:
        raise exc

    return body


class _ProfileResult(msgspec.Struct, kw_only=True):
    profile: str
    url: str | None
    ok: bool
    instances: list[Any] = msgspec.field(default_factory=list)
    error: dict[str, Any] | None = None


async def _query_profile(profile: Profile, gate: asyncio.Semaphore) -> tuple[_ProfileResult, int]:
    from kdf_remote.client import errors
    from kdf_remote.client.connect import aconnect

    async with gate:
        try:
            async with aconnect(profile, token_exchange=False) as kdf:
                statuses = await kdf.instances()
        except errors.KdfRemoteError as exc:
            code = exit_code_for(exc)
            failure = {"code": error_code_for(exc), "message": str(exc), "exit_code": code}
            return _ProfileResult(
                profile=profile.name, url=profile.url, ok=False, error=failure
            ), code
    return _ProfileResult(
        profile=profile.name, url=profile.url, ok=True, instances=statuses
    ), EXIT_OK


async def _gather_all(profiles: list[Profile]) -> list[tuple[_ProfileResult, int]]:
    import asyncio

    # Bounded fan-out: enough to overlap network waits, few enough to stay under fd limits.
    gate = asyncio.Semaphore(64)
    return await asyncio.gather(*(_query_profile(p, gate) for p in profiles))


def _status_all(options: Options) -> int:
    # asyncio costs ~35 ms to import: only the fan-out over profiles needs it.
    import asyncio

    from kdf_remote.client import errors
    from kdf_remote.client.profiles import list_profiles, load_profile

    profiles: list[Profile] = []
    broken: list[tuple[_ProfileResult, int]] = []
    for name in list_profiles():
        try:
            profiles.append(load_profile(name))
        except errors.ConfigError as exc:
            failure = {"code": "config", "message": str(exc), "exit_code": 2}
            broken.append(
                (_ProfileResult(profile=name, url=None, ok=False, error=failure), EXIT_FAILED)
            )
    with progress(options, f"querying {len(profiles)} profiles..."):
        results = asyncio.run(_gather_all(profiles)) + broken
    results.sort(key=lambda item: item[0].profile)
    worst = max((code for _, code in results), default=EXIT_OK)
    if options.json:
        print_json({"profiles": [result for result, _ in results]})
        return worst
    from kdf_remote.client.cli.render import instances_table

    out = console()
    for result, _ in results:
        if result.ok:
            out.print(
                instances_table(result.instances, title=f"profile {result.profile} ({result.url})")
            )
        else:
            message = (result.error or {}).get("message", "failed")
            out.print(f"[bold]profile {escape(result.profile)}[/]: [red]{escape(str(message))}[/]")
    if not results:
        note(options, "no profiles stored")
    return worst


# --- logs and health ----------------------------------------------------------------------------


def logs(
    instance: str = "main",
    /,
    *,
    follow: Annotated[bool, Parameter(name=["--follow", "-f"])] = False,
    lines: Annotated[int, Parameter(name=["--lines", "-n"])] = 100,
    options: Options = DEFAULT,
) -> int:
    """Show an instance's log (secrets redacted by the daemon).

    Parameters
    ----------
    instance
        Instance name.
    follow
        Keep streaming new lines until Ctrl-C.
    lines
        How many of the last lines to show first.
    """
    if lines < 0:
        return run(options, _raise(UsageError("--lines must be 0 or more")))

    def body() -> int:
        opener = _stream_controller if follow else _controller
        with opener(options) as kdf:
            for line in kdf.logs(instance=instance, tail=lines, follow=follow):
                if options.json:
                    print_json_line(line)
                else:
                    sys.stdout.write(line.line + "\n")
                    if follow:
                        sys.stdout.flush()
        return EXIT_OK

    return run(options, body)


def _health_event_text(event: HealthEvent) -> str:
    if event.kind == "sample" and event.sample is not None:
        sample = event.sample
        verdict = "healthy" if sample.healthy else "unhealthy"
        return f"{sample.name}: {sample.state}, {verdict}, restarts {sample.restarts}"
    if event.kind == "reconnecting":
        return f"stream interrupted ({event.detail}); reconnecting..."
    return "stream resumed"


def health(
    instance: str = "main",
    /,
    *,
    watch: bool = False,
    options: Options = DEFAULT,
) -> int:
    """Health of an instance; with --watch a live view that survives daemon restarts.

    Parameters
    ----------
    instance
        Instance name.
    watch
        Stream updates until Ctrl-C (NDJSON under --json).
    """

    def body() -> int:
        if not watch:
            with _controller(options) as kdf:
                sample = kdf.health(instance=instance)
            if options.json:
                print_json(sample)
            else:
                from kdf_remote.client.cli.render import health_table

                console().print(health_table(sample))
            return EXIT_OK if sample.healthy else EXIT_FAILED
        with _stream_controller(options) as kdf:
            events = kdf.monitor_health(instance=instance)
            if options.json:
                for event in events:
                    print_json_line(event)
            elif interactive(options):
                _live_health(events)
            else:
                for event in events:
                    print(_health_event_text(event), flush=True)
        return EXIT_OK

    return run(options, body)


def _live_health(events: Any) -> None:
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from kdf_remote.client.cli.render import health_table

    with Live(
        Text("waiting for the first sample..."), console=console(), auto_refresh=False
    ) as live:
        last = None
        for event in events:
            if event.kind == "sample":
                last = health_table(event.sample)
                live.update(last, refresh=True)
            else:
                banner = Text(_health_event_text(event), style="yellow")
                live.update(Group(banner, last) if last is not None else banner, refresh=True)


# --- update and rpc -----------------------------------------------------------------------------


UPDATE_POLL_S = 0.5
"""Seconds between two reads of the update's progress."""


def update(
    instance: str = "main",
    /,
    *,
    version: str | None = None,
    url: str | None = None,
    sha256: str | None = None,
    timeout: float = 1800.0,
    options: Options = DEFAULT,
) -> int:
    """Install a KDF release on the daemon: every instance restarts on it, one at a time, and
    everything rolls back when one does not come back. Shows the progress until it ends.

    Exit 0 when the release runs, 1 when the update was refused or rolled back.

    Parameters
    ----------
    instance
        Accepted for the design's `update <instance>` form; the release is shared, so every
        instance of the daemon moves to it (workers first, `main` last by default).
    version
        Release version label, e.g. `2.5.1-beta`.
    url
        Release zip URL, on an origin the daemon allows (`kdf.release_origins`).
    sha256
        SHA-256 of the zip: nothing changes unless the download matches it.
    timeout
        Seconds to follow the update before giving up watching (it keeps running).
    """
    if version is None or sha256 is None or url is None:
        return run(options, _raise(UsageError("--version, --url and --sha256 are all needed")))

    def body() -> int:
        import time

        from kdf_remote.client.models import UpdateRequest

        request = UpdateRequest(version=version, url=url, sha256=sha256)
        with (
            remote_controller(options) as kdf,
            progress(options, f"updating KDF to {version}...") as show,
        ):
            result = kdf.update_kdf(request)
            deadline = time.monotonic() + timeout
            while result.running and time.monotonic() < deadline:
                show(_update_line(result))
                time.sleep(UPDATE_POLL_S)
                result = kdf.update_status()
        if options.json:
            print_json(result)
        else:
            _print_update(result, instance)
        return EXIT_OK if result.succeeded else EXIT_FAILED

    return run(options, body)


def _update_line(result: Any) -> str:
    """One progress line: phase, then the instance being restarted."""
    active = [s.name for s in result.steps if s.state in ("restarting", "rolling_back")]
    where = f" ({', '.join(active)})" if active else ""
    return f"KDF {result.version}: {result.phase.replace('_', ' ')}{where}"


def _print_update(result: Any, instance: str) -> None:
    out = console()
    if result.running:
        out.print(escape(f"still running: {_update_line(result)}; see `kdf-remote update` again"))
        return
    outcome = result.outcome or result.phase
    out.print(escape(f"{outcome}: KDF {result.version} (was {result.previous_version or '-'})"))
    if result.reason:
        out.print(escape(result.reason))
    for step in result.steps:
        mark = "*" if step.name == instance else " "
        version = f" {step.kdf_version}" if step.kdf_version else ""
        detail = f" - {step.detail}" if step.detail else ""
        out.print(escape(f"{mark} {step.name}: {step.state}{version}{detail}"))


def _parse_params(params: str | None) -> Any:
    if params is None:
        return None
    try:
        return msgspec.json.decode(params)
    except msgspec.DecodeError as exc:
        raise UsageError(f"params: not valid JSON: {exc}") from None


def rpc(
    method: str,
    params: str | None = None,
    /,
    *,
    instance: str = "main",
    v2: bool = False,
    options: Options = DEFAULT,
) -> int:
    """Call a KDF RPC method through the daemon (which adds `userpass`) and print KDF's answer.

    Exit 0 when KDF reports success, 1 when it answers with an error.

    Parameters
    ----------
    method
        KDF method, e.g. `version` or `get_enabled_coins`.
    params
        The method's parameters as a JSON object, e.g. '{"coin": "KMD"}'.
    instance
        Instance to call.
    v2
        Send an `mmrpc: "2.0"` request (params go under `params`).
    """

    def body() -> int:
        parsed = _parse_params(params)
        if parsed is not None and not v2 and not isinstance(parsed, dict):
            raise UsageError("params: a legacy call takes a JSON object")
        with _controller(options) as kdf:
            reply = (
                kdf.rpc_v2(method, parsed, instance=instance)
                if v2
                else kdf.rpc(method, parsed, instance=instance)
            )
        if options.json or not interactive(options):
            print_json(reply.body)
        else:
            from rich.json import JSON

            console().print(JSON(msgspec.json.encode(reply.body).decode()))
        return EXIT_OK if reply.ok else EXIT_FAILED

    return run(options, body)
