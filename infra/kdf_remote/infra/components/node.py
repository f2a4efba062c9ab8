"""One kdf-remote node: a server with its firewall, optional DNS record, certificate and
bootstrap, ending in a healthy daemon. The primary and every fleet worker are nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi

from kdf_remote.infra.bootstrap_script import BootstrapInput, InstallTarget, render_install_script
from kdf_remote.infra.cloud_init import render_cloud_config
from kdf_remote.infra.cloud_sdks import random
from kdf_remote.infra.components.bootstrap import (
    Bootstrap,
    BootstrapArgs,
    LetsEncryptArgs,
    SecretFile,
)
from kdf_remote.infra.components.certificate import (
    DaemonCertificate,
    DaemonCertificateArgs,
    PrivateCa,
)
from kdf_remote.infra.components.dns import DnsRecord, DnsRecordArgs
from kdf_remote.infra.components.firewall import Firewall, FirewallArgs
from kdf_remote.infra.components.server import Server, ServerArgs, ServerProvider
from kdf_remote.infra.components.ssh import SshIdentity, connection_for
from kdf_remote.infra.daemon_config import DaemonConfigInput, render_daemon_config
from kdf_remote.infra.firewall_rules import plan_firewall
from kdf_remote.infra.fleet_plan import NodePlan
from kdf_remote.infra.secret_values import JWT_KEY_BYTES
from kdf_remote.infra.settings import DnsSettings, Settings

__all__ = ["KdfNode", "KdfNodeArgs"]


@dataclass(frozen=True)
class KdfNodeArgs:
    """Inputs of :class:`KdfNode`."""

    plan: NodePlan
    settings: Settings
    server_provider: ServerProvider
    api_key_hash: pulumi.Output[str]
    tags: Mapping[str, str]
    cloud_provider: pulumi.ProviderResource | None = None
    identity: SshIdentity | None = None
    ca: PrivateCa | None = None
    dns: DnsSettings | None = None
    custom_private_key: pulumi.Output[str] | None = None
    target: InstallTarget = field(default_factory=InstallTarget)
    """Where the install script installs (a real server unless a test says otherwise)."""


class KdfNode(pulumi.ComponentResource):
    """A server running the kdf-remote daemon, checked healthy over TLS."""

    name: str
    region: str
    public_ip: pulumi.Output[str]
    instance_id: pulumi.Output[str]
    daemon_url: pulumi.Output[str]
    public_host: pulumi.Output[str]
    health: pulumi.Output[str]

    def __init__(
        self, name: str, args: KdfNodeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kdf-remote:infra:KdfNode", name, None, opts)
        settings, layout, plan = args.settings, args.target.layout, args.plan
        child = pulumi.ResourceOptions(parent=self)
        self.name = plan.name
        self.region = plan.region
        kind = plan.provider
        rules = plan_firewall(settings)
        bootstrap_input = BootstrapInput(settings=settings, target=args.target)
        install_script = render_install_script(bootstrap_input)

        firewall: Firewall | None = None
        if kind == "aws":
            firewall = Firewall(
                f"{name}-firewall",
                FirewallArgs(kind="aws", rules=rules, tags=args.tags),
                opts=pulumi.ResourceOptions(parent=self, provider=args.cloud_provider),
            )
        server = Server(
            f"{name}-server",
            ServerArgs(
                plan=plan,
                user_data=render_cloud_config(
                    bootstrap_input, ssh_public_keys=settings.ssh_public_keys
                ),
                tags=args.tags,
                ssh_public_key=args.identity.public_key_openssh if args.identity else "",
                image=settings.image if plan.role == "primary" else None,
                ssh_user=settings.ssh_user if kind != "custom" else None,
                security_group_ids=[firewall.security_group_id]
                if firewall is not None and firewall.security_group_id is not None
                else [],
                do_ssh_key_ids=[args.identity.do_ssh_key_id]
                if args.identity is not None and args.identity.do_ssh_key_id is not None
                else [],
            ),
            args.server_provider,
            opts=child,
        )
        self.public_ip = server.public_ip
        self.instance_id = server.instance_id
        connection = connection_for(
            host=server.public_ip,
            user=server.ssh_user,
            identity=args.identity,
            custom=settings.custom_host if kind == "custom" else None,
            custom_private_key=args.custom_private_key,
        )
        if kind == "do":
            firewall = Firewall(
                f"{name}-firewall",
                FirewallArgs(
                    kind="do", rules=rules, tags=args.tags, droplet_ids=[server.instance_id]
                ),
                opts=pulumi.ResourceOptions(parent=self, provider=args.cloud_provider),
            )
        elif kind == "custom" and settings.manage_firewall:
            firewall = Firewall(
                f"{name}-firewall",
                FirewallArgs(
                    kind="custom",
                    rules=rules,
                    tags=args.tags,
                    connection=connection,
                    ssh_user=server.ssh_user,
                ),
                opts=child,
            )

        fqdn: str | None = None
        record: DnsRecord | None = None
        if args.dns is not None and kind != "custom" and args.cloud_provider is not None:
            fqdn = args.dns.fqdn
            record = DnsRecord(
                f"{name}-dns",
                DnsRecordArgs(
                    kind=kind,
                    zone=args.dns.zone,
                    fqdn=fqdn,
                    ip=server.public_ip,
                    provider=args.cloud_provider,
                ),
                opts=child,
            )
        self.public_host = pulumi.Output.from_input(fqdn) if fqdn else server.public_ip
        self.daemon_url = self.public_host.apply(
            lambda host: f"https://{host}:{settings.daemon_port}"
        )

        files = list(self._secret_files(name, args, server.public_ip, fqdn))
        letsencrypt = (
            LetsEncryptArgs(fqdn=fqdn, email=settings.tls.email)
            if settings.tls.mode == "letsencrypt" and fqdn and settings.tls.email
            else None
        )
        depends: list[pulumi.Resource] = [server, *server.resources]
        if firewall is not None:
            depends.append(firewall)
        if record is not None:
            depends.append(record)
        bootstrap = Bootstrap(
            f"{name}-bootstrap",
            BootstrapArgs(
                connection=connection,
                ssh_user=server.ssh_user,
                install_script=install_script,
                files=tuple(files),
                layout=layout,
                health_host=self.public_host,
                daemon_port=settings.daemon_port,
                ca_file=layout.tls_ca if letsencrypt is None else None,
                letsencrypt=letsencrypt,
                depends_on=depends,
                service_manager=args.target.service_manager,
            ),
            opts=child,
        )
        self.health = bootstrap.health.stdout
        self.register_outputs(
            {
                "public_ip": self.public_ip,
                "instance_id": self.instance_id,
                "daemon_url": self.daemon_url,
                "health": self.health,
            }
        )

    def _secret_files(
        self,
        name: str,
        args: KdfNodeArgs,
        ip: pulumi.Output[str],
        fqdn: str | None,
    ) -> list[SecretFile]:
        settings, layout = args.settings, args.target.layout
        child = pulumi.ResourceOptions(parent=self)
        owner = f"{layout.daemon_user}:{layout.daemon_user}"
        # KDF's rpc_password is not made here: the daemon generates one per instance on first
        # start (KDF's policy, 0600 in its state directory) and never shows it.
        jwt_key = random.RandomBytes(f"{name}-jwt-key", length=JWT_KEY_BYTES, opts=child)
        config = args.api_key_hash.apply(
            lambda key_hash: render_daemon_config(
                DaemonConfigInput(settings=settings, layout=layout, api_key_hash=key_hash)
            )
        )
        files = [
            SecretFile(
                "daemon-config", layout.daemon_config, pulumi.Output.secret(config), "0600", owner
            ),
            SecretFile(
                "jwt-key",
                layout.jwt_key,
                pulumi.Output.secret(jwt_key.base64),
                "0600",
                owner,
                base64=True,
            ),
        ]
        if args.ca is not None and settings.tls.mode == "self_signed":
            cert = DaemonCertificate(
                f"{name}-tls", DaemonCertificateArgs(ca=args.ca, ip=ip, dns_name=fqdn), opts=child
            )
            files += [
                SecretFile("tls-key", layout.tls_key, cert.private_key_pem, "0600", owner),
                SecretFile(
                    "tls-cert",
                    layout.tls_cert,
                    cert.cert_pem,
                    "0644",
                    f"root:{layout.daemon_user}",
                ),
                SecretFile("tls-ca", layout.tls_ca, cert.ca_pem, "0644", "root:root"),
            ]
        return files
