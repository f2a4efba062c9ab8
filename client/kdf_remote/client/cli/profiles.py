"""Profile commands: import (stack outputs), add, list, show, use, remove."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

from kdf_remote.client.cli._common import (
    DEFAULT,
    EXIT_OK,
    Options,
    UsageError,
    console,
    escape,
    print_json,
    run,
)
from kdf_remote.client.errors import ConfigError, KdfRemoteError
from kdf_remote.client.profiles import (
    ENV_PROFILE,
    Profile,
    SdkRemoteConfig,
    StackOutputs,
    check_name,
    current_profile_name,
    decode_stack_outputs,
    delete_profile,
    list_profiles,
    load_profile,
    profile_from_outputs,
    profiles_dir,
    remote_config_from_url,
    resolve_profile,
    save_profile,
    sdk_remote_config,
    set_current_profile,
)

__all__ = ["add", "import_", "list_", "remote_config", "remove", "show", "stack_outputs", "use"]

ENV_API_KEY = "KDF_REMOTE_API_KEY"


def stack_outputs(stack: str, *, cwd: Path | None = None) -> StackOutputs:
    """Run `pulumi stack output --json --show-secrets --stack STACK` and validate the result."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise ConfigError(
            "the pulumi CLI is not on PATH: install it, or export the outputs with "
            "`pulumi stack output --json --show-secrets > outputs.json` and use --file",
            field="stack",
        )
    try:
        done = subprocess.run(
            [pulumi, "stack", "output", "--json", "--show-secrets", "--stack", stack],
            cwd=cwd,
            capture_output=True,
            check=False,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        raise KdfRemoteError(f"`pulumi stack output` for stack {stack!r} timed out") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = lines[-1] if lines else f"exit {done.returncode}"
        raise KdfRemoteError(f"`pulumi stack output` failed for stack {stack!r}: {reason}")
    return decode_stack_outputs(done.stdout, source=f"stack {stack}")


def _saved(options: Options, profile: Profile, path: Path, *, made_current: bool) -> None:
    if options.json:
        print_json(
            {
                "profile": profile.name,
                "path": str(path),
                "url": profile.url,
                "current": made_current,
            }
        )
        return
    suffix = " (now the default)" if made_current else ""
    console().print(f"profile [bold]{escape(profile.name)}[/] saved to {escape(str(path))}{suffix}")


def _store(profile: Profile, ca_pem: str | None) -> tuple[Path, bool]:
    path = save_profile(profile, ca_pem=ca_pem)
    # The first profile becomes the default, so `kdf-remote status` works right away.
    made_current = current_profile_name() is None
    if made_current:
        set_current_profile(profile.name)
    return path, made_current


def import_(
    *,
    stack: str | None = None,
    file: Path | None = None,
    name: str | None = None,
    cwd: Path | None = None,
    options: Options = DEFAULT,
) -> int:
    """Create a profile from Pulumi stack outputs (design.md "Stack outputs").

    Parameters
    ----------
    stack
        Stack to read with `pulumi stack output --json --show-secrets`.
    file
        A JSON file holding those outputs instead.
    name
        Profile name (default: the stack name, or the file's stem).
    cwd
        Directory of the Pulumi project (for --stack).
    """

    def body() -> int:
        if (stack is None) == (file is None):
            raise UsageError("give exactly one of --stack NAME or --file outputs.json")
        if stack is not None:
            outputs = stack_outputs(stack, cwd=cwd)
            default_name = stack.rsplit("/", 1)[-1]
        else:
            assert file is not None
            try:
                raw = file.read_bytes()
            except OSError as exc:
                raise UsageError(f"--file {file}: cannot be read: {exc.strerror}") from None
            outputs = decode_stack_outputs(raw, source=str(file))
            default_name = file.stem
        profile, ca_pem = profile_from_outputs(name or default_name, outputs, stack=stack)
        path, made_current = _store(profile, ca_pem)
        _saved(options, profile, path, made_current=made_current)
        return EXIT_OK

    return run(options, body)


def _read_key(key_file: Path | None, key_stdin: bool) -> str | None:
    """The API key from a file, stdin, the environment or a prompt; never from argv."""
    if key_file is not None:
        try:
            return key_file.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise UsageError(f"--key-file {key_file}: cannot be read: {exc.strerror}") from None
    if key_stdin:
        return sys.stdin.readline().strip() or None
    if os.environ.get(ENV_API_KEY):
        return os.environ[ENV_API_KEY].strip()
    if sys.stdin.isatty():
        return getpass.getpass("API key (empty for none): ").strip() or None
    return None


def add(
    name: str,
    /,
    *,
    host: str,
    port: int = 8000,
    key_file: Path | None = None,
    key_stdin: bool = False,
    ca: Path | None = None,
    http: bool = False,
    sign: bool = False,
    timeout: float = 30.0,
    options: Options = DEFAULT,
) -> int:
    """Create a profile by hand. The API key is read from --key-file, --key-stdin,
    KDF_REMOTE_API_KEY or a prompt, never from the command line (argv is visible to others).

    Parameters
    ----------
    name
        Profile name.
    host
        Daemon host name or IP.
    port
        Daemon port.
    key_file
        File holding the API key.
    key_stdin
        Read the API key from the first line of stdin.
    ca
        CA certificate (PEM) to pin; copied beside the profile.
    http
        Plain http (only allowed to a loopback host).
    sign
        Sign every request with a key derived from the API key.
    timeout
        Request timeout in seconds.
    """

    def body() -> int:
        check_name(name)
        if not 0 < port < 65536:
            raise UsageError(f"--port: expected 1-65535, got {port}")
        ca_pem = None
        if ca is not None:
            try:
                ca_pem = ca.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"--ca {ca}: cannot be read: {exc}") from None
        shown_host = f"[{host}]" if ":" in host else host
        profile = Profile(
            name=name,
            url=f"{'http' if http else 'https'}://{shown_host}:{port}",
            api_key=_read_key(key_file, key_stdin),
            sign=sign,
            timeout=timeout,
        )
        path, made_current = _store(profile, ca_pem)
        _saved(options, profile, path, made_current=made_current)
        return EXIT_OK

    return run(options, body)


def list_(*, options: Options = DEFAULT) -> int:
    """List stored profiles (the default one is marked)."""

    def body() -> int:
        current = os.environ.get(ENV_PROFILE) or current_profile_name()
        rows: list[dict[str, Any]] = []
        for name in list_profiles():
            try:
                profile = load_profile(name)
                rows.append(
                    {
                        "name": name,
                        "kind": profile.kind,
                        "url": profile.url,
                        "current": name == current,
                    }
                )
            except ConfigError as exc:
                rows.append(
                    {
                        "name": name,
                        "kind": None,
                        "url": None,
                        "current": name == current,
                        "error": str(exc),
                    }
                )
        if options.json:
            print_json({"profiles": rows})
            return EXIT_OK
        from rich.table import Table

        table = Table(header_style="bold")
        for column in ("", "NAME", "KIND", "URL"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                "*" if row["current"] else "",
                row["name"],
                row["kind"] or "?",
                row["url"] or row.get("error", "-"),
            )
        console().print(table)
        return EXIT_OK

    return run(options, body)


def _public_view(profile: Profile) -> dict[str, Any]:
    """A profile as shown to a user: everything but the key (only whether there is one)."""
    view = msgspec.to_builtins(profile)
    view.pop("api_key", None)
    view["has_api_key"] = profile.api_key is not None
    if profile.ca_cert is not None:
        ca = Path(profile.ca_cert)
        view["ca_cert"] = str(ca if ca.is_absolute() else profiles_dir() / ca)
    return dict(view)


class _KdfCompat(msgspec.Struct, frozen=True, kw_only=True):
    """The daemon's ``GET /v1/instances/{name}/kdf-compat`` answer."""

    url: str
    ip_address: str
    port: int
    https: bool
    rpc_password: str


def _fetch_kdf_compat(profile: Profile, instance: str) -> _KdfCompat:
    """Ask the daemon (admin key) for the listener's values and the instance's rpc_password."""
    from urllib.parse import quote

    import httpx

    from kdf_remote.client._core import Call, interpret
    from kdf_remote.client._http import ClientSettings, client_kwargs, request_parts, translate
    from kdf_remote.client.errors import ProtocolError, Unsupported

    if profile.kind != "daemon":
        raise Unsupported(
            f"profile {profile.name!r} is a local profile: the KDF-compatible listener is a "
            "daemon feature"
        )

    def decode(_status: int, body: bytes) -> _KdfCompat:
        try:
            return msgspec.json.decode(body, type=_KdfCompat)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ProtocolError(f"unexpected kdf-compat answer from the daemon: {exc}") from None

    call = Call("GET", f"/v1/instances/{quote(instance, safe='')}/kdf-compat", decode)
    settings = ClientSettings.from_profile(profile, token_exchange=False)
    with httpx.Client(**client_kwargs(settings, None)) as http:
        try:
            response = http.request(call.method, call.path, **request_parts(call))
        except httpx.HTTPError as exc:
            raise translate(exc, settings.url) from None
    return interpret(
        call, response.status_code, response.content, response.headers.get("Retry-After")
    )


def remote_config(profile: Profile, *, show_secret: bool, instance: str) -> SdkRemoteConfig | None:
    """The SDK ``RemoteConfig`` values of a profile; the rpc_password only when ``show_secret``.

    Address, port and TLS come from the profile's ``kdf_rpc_url`` (the stack outputs); a profile
    without one takes them from the daemon, which is asked anyway for the password.
    """
    config = sdk_remote_config(profile)
    if not show_secret:
        return config
    fetched = _fetch_kdf_compat(profile, instance)
    if config is None:
        config = remote_config_from_url(fetched.url, field="kdf-compat url")
    return msgspec.structs.replace(config, rpc_password=fetched.rpc_password)


def show(
    name: str | None = None,
    /,
    *,
    show_secret: bool = False,
    instance: str = "main",
    options: Options = DEFAULT,
) -> int:
    """Show a profile (the default one when no name is given); never prints the API key.

    When the daemon runs the KDF-compatible listener (``kdf_compat``), also prints the values an
    app built on the Komodo DeFi SDK puts in its ``RemoteConfig``: ip_address, port, https, and
    with --show-secret the rpc_password (asked from the daemon; needs an admin key, audited).

    Parameters
    ----------
    name
        Profile name.
    show_secret
        Also print the instance's rpc_password (the SDK's ``rpcPassword``).
    instance
        The instance the listener fronts.
    """

    def body() -> int:
        profile = resolve_profile(name or options.profile)
        view = _public_view(profile)
        remote = remote_config(profile, show_secret=show_secret, instance=instance)
        view["remote_config"] = msgspec.to_builtins(remote) if remote is not None else None
        if options.json:
            print_json(view)
            return EXIT_OK
        out = console()
        for key, value in view.items():
            if key != "remote_config":
                out.print(f"[bold]{key}[/]: {escape(str(value))}")
        if remote is None:
            out.print("[bold]remote_config[/]: none (no kdf_compat listener in this profile)")
            return EXIT_OK
        out.print("[bold]remote_config[/] (Komodo DeFi SDK RemoteConfig):")
        password = remote.rpc_password or "(hidden: add --show-secret)"
        for line in (
            f"  ip_address: {remote.ip_address}",
            f"  port: {remote.port}",
            f"  https: {'true' if remote.https else 'false'}",
            f"  rpc_password: {password}",
        ):
            # Verbatim: a password must print exactly as it is (no markup, emoji or wrapping).
            out.print(line, markup=False, emoji=False, highlight=False, soft_wrap=True)
        return EXIT_OK

    return run(options, body)


def use(name: str, /, *, options: Options = DEFAULT) -> int:
    """Make a profile the default.

    Parameters
    ----------
    name
        Profile name.
    """

    def body() -> int:
        set_current_profile(name)
        if options.json:
            print_json({"current": name})
        else:
            console().print(f"default profile: [bold]{escape(name)}[/]")
        return EXIT_OK

    return run(options, body)


def remove(name: str, /, *, options: Options = DEFAULT) -> int:
    """Delete a profile and its CA file.

    Parameters
    ----------
    name
        Profile name.
    """

    def body() -> int:
        delete_profile(name)
        if options.json:
            print_json({"removed": name})
        else:
            console().print(f"profile [bold]{escape(name)}[/] removed")
        return EXIT_OK

    return run(options, body)
