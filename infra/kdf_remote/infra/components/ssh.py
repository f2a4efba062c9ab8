"""The SSH access concept: how ``pulumi up`` reaches its servers.

Cloud servers get a Pulumi-generated Ed25519 key (private half secret in the stack state);
DigitalOcean registers its public half once per stack (the API refuses the same key twice).
Existing hosts use the configured private key, or else the operator's ssh-agent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pulumi

from kdf_remote.infra.cloud_sdks import command, digitalocean, tls
from kdf_remote.infra.settings import CustomHost, SettingsError

__all__ = ["SshIdentity", "SshIdentityArgs", "connection_for"]

# A fresh cloud server takes a minute or two before sshd answers.
CLOUD_DIAL_ATTEMPTS = 60
DIAL_TIMEOUT_S = 10


@dataclass(frozen=True)
class SshIdentityArgs:
    """Inputs of :class:`SshIdentity`."""

    do_provider: pulumi.ProviderResource | None = None
    """Set when the stack has DigitalOcean servers: the key is registered with that account."""


class SshIdentity(pulumi.ComponentResource):
    """The stack's deploy key."""

    public_key_openssh: pulumi.Output[str]
    private_key_openssh: pulumi.Output[str]
    do_ssh_key_id: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: SshIdentityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kdf-remote:infra:SshIdentity", name, None, opts)
        key = tls.PrivateKey(
            f"{name}-key", algorithm="ED25519", opts=pulumi.ResourceOptions(parent=self)
        )
        self.public_key_openssh = key.public_key_openssh
        self.private_key_openssh = pulumi.Output.secret(key.private_key_openssh)
        self.do_ssh_key_id = None
        if args.do_provider is not None:
            registered = digitalocean.SshKey(
                f"{name}-do",
                name=f"kdf-remote-{pulumi.get_stack()}",
                public_key=key.public_key_openssh,
                opts=pulumi.ResourceOptions(parent=self, provider=args.do_provider),
            )
            self.do_ssh_key_id = registered.id
        self.register_outputs({"public_key_openssh": self.public_key_openssh})


def connection_for(
    *,
    host: pulumi.Input[str],
    user: str,
    identity: SshIdentity | None,
    custom: CustomHost | None = None,
    custom_private_key: pulumi.Output[str] | None = None,
) -> command.remote.ConnectionArgs:
    """SSH connection arguments for one server."""
    if custom is None:
        if identity is None:
            raise ValueError("a cloud server needs the stack's SSH identity")
        return command.remote.ConnectionArgs(
            host=host,
            user=user,
            private_key=identity.private_key_openssh,
            dial_error_limit=CLOUD_DIAL_ATTEMPTS,
            per_dial_timeout=DIAL_TIMEOUT_S,
        )
    if custom_private_key is not None:
        return command.remote.ConnectionArgs(
            host=host,
            port=custom.port,
            user=user,
            private_key=custom_private_key,
            per_dial_timeout=DIAL_TIMEOUT_S,
        )
    agent = os.environ.get("SSH_AUTH_SOCK")
    if not agent:
        raise SettingsError(
            "ssh_private_key",
            None,
            "a key (`pulumi config set --secret kdf-remote:ssh_private_key < key`) or a running "
            "ssh-agent (SSH_AUTH_SOCK) to reach the existing host",
        )
    return command.remote.ConnectionArgs(
        host=host,
        port=custom.port,
        user=user,
        agent_socket_path=agent,
        per_dial_timeout=DIAL_TIMEOUT_S,
    )
