"""`deploy` and `destroy`: a daemon on this machine (local) or a server through Pulumi.

Pulumi is imported only here and only for aws|do|custom, through the Automation API boundary
`kdf_remote.infra.automation` (functions `up`, `destroy`, `outputs`; error `PulumiNotInstalled`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

from kdf_remote.client.cli._common import (
    DEFAULT,
    EXIT_OK,
    Options,
    UsageError,
    console,
    escape,
    note,
    print_json,
    progress,
    run,
)
from kdf_remote.client.errors import ConfigError, KdfRemoteError

__all__ = ["deploy", "destroy"]

Provider = Literal["local", "aws", "do", "custom"]


def _automation() -> Any:
    try:
        automation = importlib.import_module("kdf_remote.infra.automation")
    except ImportError as exc:
        raise ConfigError(
            "deploying to a cloud needs the [infra] extra: pip install 'kdf-remote[infra]'",
            field="provider",
        ) from exc
    return automation


def _cloud_deploy(provider: Provider, stack: str | None, cwd: Path | None, options: Options) -> int:
    from kdf_remote.client.cli.profiles import _saved, _store
    from kdf_remote.client.profiles import decode_stack_outputs, profile_from_outputs

    if stack is None:
        raise UsageError(f"--provider {provider} needs --stack NAME")
    automation = _automation()
    try:
        with progress(
            options, f"deploying stack {stack} ({provider}); this takes minutes..."
        ) as update:
            raw = automation.up(stack=stack, provider=provider, work_dir=cwd, on_output=update)
    except automation.PulumiNotInstalled as exc:
        raise ConfigError(f"the pulumi CLI is needed for --provider {provider}: {exc}") from None
    outputs = decode_stack_outputs(_as_mapping(raw), source=f"stack {stack}")
    profile, ca_pem = profile_from_outputs(stack.rsplit("/", 1)[-1], outputs, stack=stack)
    path, made_current = _store(profile, ca_pem)
    _saved(options, profile, path, made_current=made_current)
    return EXIT_OK


def _as_mapping(raw: Any) -> dict[str, Any]:
    """Stack outputs as plain values (the Automation API wraps each in an OutputValue)."""
    if not isinstance(raw, dict):
        raise KdfRemoteError("the Pulumi program returned no stack outputs")
    return {key: getattr(value, "value", value) for key, value in raw.items()}


def deploy(
    *,
    provider: Provider = "local",
    stack: str | None = None,
    kdf_binary: Path | None = None,
    kdf_release_version: str | None = None,
    kdf_release_url: str | None = None,
    kdf_release_sha256: str | None = None,
    port: int | None = None,
    name: str = "local",
    cwd: Path | None = None,
    options: Options = DEFAULT,
) -> int:
    """Provision a server (aws|do|custom, through Pulumi) or run a daemon on this machine (local).

    `--provider local` needs no cloud account: it starts a daemon on 127.0.0.1 with its own CA and
    an admin key, creates the `local` profile and returns when the daemon answers. KDF is
    --kdf-binary, else `kdf` on PATH, else a pinned release download, else the kdf-sim simulator.

    Parameters
    ----------
    provider
        Where to deploy.
    stack
        Pulumi stack name (aws|do|custom).
    kdf_binary
        KDF binary to run (local).
    kdf_release_version
        Version label of a pinned KDF release to download (local).
    kdf_release_url
        URL of that release's zip (local).
    kdf_release_sha256
        SHA-256 of that zip (local; required with the URL).
    port
        Daemon port (local; default a free one).
    name
        Profile name of the local deployment.
    cwd
        Pulumi project directory (aws|do|custom).
    """

    def body() -> int:
        if provider != "local":
            return _cloud_deploy(provider, stack, cwd, options)
        from kdf_remote.client.local_deploy import LocalDeployOptions, ReleasePin, deploy_local

        release = None
        if kdf_release_url or kdf_release_sha256 or kdf_release_version:
            if not (kdf_release_url and kdf_release_sha256 and kdf_release_version):
                raise UsageError(
                    "a KDF release needs --kdf-release-version, --kdf-release-url "
                    "and --kdf-release-sha256"
                )
            release = ReleasePin(
                version=kdf_release_version, url=kdf_release_url, sha256=kdf_release_sha256
            )
        deploy_options = LocalDeployOptions(
            profile_name=name, kdf_binary=kdf_binary, release=release, port=port
        )
        with progress(options, "deploying a local daemon...") as update:
            result = deploy_local(deploy_options, on_step=update)
        if options.json:
            print_json(result)
            return EXIT_OK
        out = console()
        out.print(
            f"daemon running at [bold]{escape(result.url)}[/] (pid {result.pid}), "
            f"profile [bold]{escape(result.profile)}[/]"
        )
        if result.simulated:
            out.print(
                "[yellow]no KDF binary found: using the kdf-sim simulator[/] "
                f"({escape(result.kdf_binary)}). Pass --kdf-binary PATH for a real KDF."
            )
        else:
            out.print(f"KDF: {escape(result.kdf_binary)} ({result.kdf_source})")
        out.print("next: [bold]kdf-remote start main[/], then [bold]kdf-remote rpc version[/]")
        return EXIT_OK

    return run(options, body)


def destroy(
    *,
    provider: Provider = "local",
    stack: str | None = None,
    purge: bool = False,
    cwd: Path | None = None,
    options: Options = DEFAULT,
) -> int:
    """Tear down what `deploy` created.

    Local: stops the daemon and KDF, removes the certificates, keys, config and the profile, and
    keeps KDF's data directory unless --purge.

    Parameters
    ----------
    provider
        What to tear down.
    stack
        Pulumi stack name (aws|do|custom).
    purge
        Also delete KDF's data directory (local).
    cwd
        Pulumi project directory (aws|do|custom).
    """

    def body() -> int:
        if provider != "local":
            if stack is None:
                raise UsageError(f"--provider {provider} needs --stack NAME")
            automation = _automation()
            try:
                with progress(options, f"destroying stack {stack}...") as update:
                    automation.destroy(stack=stack, work_dir=cwd, on_output=update)
            except automation.PulumiNotInstalled as exc:
                raise ConfigError(
                    f"the pulumi CLI is needed for --provider {provider}: {exc}"
                ) from None
            if options.json:
                print_json({"provider": provider, "stack": stack, "destroyed": True})
            else:
                console().print(f"stack [bold]{escape(stack)}[/] destroyed")
            return EXIT_OK
        from kdf_remote.client.local_deploy import destroy_local

        with progress(options, "removing the local deployment...") as update:
            result = destroy_local(purge=purge, on_step=update)
        if options.json:
            print_json(result)
            return EXIT_OK
        if result.stopped_pid is not None:
            console().print(f"daemon (pid {result.stopped_pid}) stopped")
        console().print(f"removed {len(result.removed)} items")
        for kept in result.kept:
            note(options, f"kept KDF data: {escape(kept)} (use --purge to delete it)")
        return EXIT_OK

    return run(options, body)
