"""The bootstrap concept: turn a reachable server into a running, healthy daemon over SSH.

Steps, each a ``pulumi-command`` remote command:

1. ``install``: run the install script (the same one cloud-init ran at first boot) from stdin;
   re-run whenever the script changes, which is how pin or unit changes reach live servers.
2. ``tls-letsencrypt`` (Let's Encrypt mode only): certbot obtains the certificate.
3. one command per secret file: content on stdin (a secret in the state), written 0600 atomically.
4. ``restart``: (re)start the daemon; its triggers hash the script and every delivered file, so
   a changed secret or config is re-applied.
5. ``health``: wait until ``/v1/health`` answers over TLS, so ``pulumi up`` ends with a working
   server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import pulumi

from kdf_remote.infra.cloud_sdks import command
from kdf_remote.infra.layout import Layout
from kdf_remote.infra.remote_commands import (
    ServiceManager,
    certbot_command,
    health_wait_command,
    install_command,
    restart_command,
    write_file_command,
)

__all__ = ["Bootstrap", "BootstrapArgs", "LetsEncryptArgs", "SecretFile"]


@dataclass(frozen=True)
class SecretFile:
    """A file delivered over SSH; ``content`` is a secret Output and only ever travels on stdin."""

    name: str
    path: PurePosixPath
    content: pulumi.Output[str]
    mode: str
    owner: str
    base64: bool = False


@dataclass(frozen=True)
class LetsEncryptArgs:
    """Let's Encrypt issuance for the server's DNS name."""

    fqdn: str
    email: str


@dataclass(frozen=True)
class BootstrapArgs:
    """Inputs of :class:`Bootstrap`."""

    connection: command.remote.ConnectionArgs
    ssh_user: str
    install_script: str
    files: tuple[SecretFile, ...]
    layout: Layout
    health_host: pulumi.Input[str]
    daemon_port: int
    ca_file: PurePosixPath | None
    letsencrypt: LetsEncryptArgs | None = None
    depends_on: Sequence[pulumi.Resource] = ()
    service_manager: ServiceManager = "auto"


def _digest(parts: list[str]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(hashlib.sha256(part.encode()).digest())
    return hasher.hexdigest()


class Bootstrap(pulumi.ComponentResource):
    """Install, deliver secrets, (re)start and health-check the daemon on one server."""

    health: command.remote.Command

    def __init__(
        self, name: str, args: BootstrapArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kdf-remote:infra:Bootstrap", name, None, opts)
        base = pulumi.ResourceOptions(parent=self)
        script_hash = hashlib.sha256(args.install_script.encode()).hexdigest()
        install = command.remote.Command(
            f"{name}-install",
            connection=args.connection,
            create=install_command(args.ssh_user),
            stdin=args.install_script,
            triggers=[script_hash],
            opts=pulumi.ResourceOptions.merge(
                base, pulumi.ResourceOptions(depends_on=list(args.depends_on))
            ),
        )
        after_install = pulumi.ResourceOptions.merge(
            base, pulumi.ResourceOptions(depends_on=[install])
        )
        delivered: list[pulumi.Resource] = []
        if args.letsencrypt is not None:
            delivered.append(
                command.remote.Command(
                    f"{name}-tls-letsencrypt",
                    connection=args.connection,
                    create=certbot_command(
                        fqdn=args.letsencrypt.fqdn,
                        email=args.letsencrypt.email,
                        layout=args.layout,
                        ssh_user=args.ssh_user,
                    ),
                    opts=after_install,
                )
            )
        for item in args.files:
            delivered.append(
                command.remote.Command(
                    f"{name}-{item.name}",
                    connection=args.connection,
                    create=write_file_command(
                        item.path,
                        mode=item.mode,
                        owner=item.owner,
                        ssh_user=args.ssh_user,
                        base64=item.base64,
                    ),
                    stdin=item.content,
                    opts=after_install,
                )
            )
        # Hash, not content: the trigger stays a secret either way, but a digest keeps the
        # state small and the diff readable.
        applied: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(*(f.content for f in args.files)).apply(
                lambda contents: _digest([script_hash, *contents])
            )
        )
        restart = command.remote.Command(
            f"{name}-restart",
            connection=args.connection,
            create=restart_command(
                args.layout, args.ssh_user, service_manager=args.service_manager
            ),
            triggers=[applied],
            opts=pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(depends_on=delivered)),
        )
        self.health = command.remote.Command(
            f"{name}-health",
            connection=args.connection,
            create=pulumi.Output.from_input(args.health_host).apply(
                lambda host: health_wait_command(
                    public_host=host, port=args.daemon_port, ca_file=args.ca_file
                )
            ),
            triggers=[applied],
            opts=pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(depends_on=[restart])),
        )
        self.register_outputs({"health": self.health.stdout})
