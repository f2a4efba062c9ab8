"""The firewall concept: the rule set of :func:`~kdf_remote.infra.firewall_rules.plan_firewall`
enforced by an AWS security group, a DigitalOcean firewall, or ufw on an existing host.

Only inbound rules vary; outbound traffic stays open (package mirrors, the KDF release, P2P
seed nodes, Let's Encrypt).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import pulumi

from kdf_remote.infra.cloud_sdks import aws, command, digitalocean
from kdf_remote.infra.firewall_rules import FirewallRule, render_ufw_commands, render_ufw_removal
from kdf_remote.infra.remote_commands import as_root

__all__ = ["Firewall", "FirewallArgs"]


@dataclass(frozen=True)
class FirewallArgs:
    """Inputs of :class:`Firewall`; which optional field is needed depends on ``kind``."""

    kind: Literal["aws", "do", "custom"]
    rules: tuple[FirewallRule, ...]
    tags: Mapping[str, str]
    droplet_ids: Sequence[pulumi.Input[str]] = ()
    """DigitalOcean: the droplets the firewall protects."""
    connection: command.remote.ConnectionArgs | None = None
    """Existing host: where to run ufw."""
    ssh_user: str = "root"
    depends_on: Sequence[pulumi.Resource] = ()


class Firewall(pulumi.ComponentResource):
    """Inbound rules for one server."""

    security_group_id: pulumi.Output[str] | None
    resources: list[pulumi.Resource]

    def __init__(
        self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kdf-remote:infra:Firewall", name, None, opts)
        self.security_group_id = None
        self.resources = []
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        if args.kind == "aws":
            self._aws(name, args, child)
        elif args.kind == "do":
            self._digitalocean(name, args, child)
        else:
            self._ufw(name, args, child)
        self.register_outputs({"security_group_id": self.security_group_id})

    def _aws(self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions) -> None:
        tags = dict(args.tags)
        group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            description="kdf-remote server: daemon and SSH from allowed CIDRs only",
            tags={**tags, "Name": f"kdf-remote-{name}"},
            opts=opts,
        )
        rule_opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=group))
        self.resources.append(group)
        for rule in args.rules:
            for index, cidr in enumerate(rule.ipv4_sources()):
                self.resources.append(
                    aws.vpc.SecurityGroupIngressRule(
                        f"{name}-{rule.purpose}-v4-{index}",
                        security_group_id=group.id,
                        ip_protocol=rule.protocol,
                        from_port=rule.port,
                        to_port=rule.port,
                        cidr_ipv4=cidr,
                        description=rule.description,
                        tags=tags,
                        opts=rule_opts,
                    )
                )
            for index, cidr in enumerate(rule.ipv6_sources()):
                self.resources.append(
                    aws.vpc.SecurityGroupIngressRule(
                        f"{name}-{rule.purpose}-v6-{index}",
                        security_group_id=group.id,
                        ip_protocol=rule.protocol,
                        from_port=rule.port,
                        to_port=rule.port,
                        cidr_ipv6=cidr,
                        description=rule.description,
                        tags=tags,
                        opts=rule_opts,
                    )
                )
        self.resources.append(
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-egress-v4",
                security_group_id=group.id,
                ip_protocol="-1",
                cidr_ipv4="0.0.0.0/0",
                description="kdf-remote outbound",
                tags=tags,
                opts=rule_opts,
            )
        )
        self.resources.append(
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-egress-v6",
                security_group_id=group.id,
                ip_protocol="-1",
                cidr_ipv6="::/0",
                description="kdf-remote outbound",
                tags=tags,
                opts=rule_opts,
            )
        )
        self.security_group_id = group.id

    def _digitalocean(self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions) -> None:
        # DigitalOcean firewalls take no labels: their `tags` argument selects droplets to
        # protect, so it stays unset and the droplet is named explicitly.
        inbound = [
            digitalocean.FirewallInboundRuleArgs(
                protocol=rule.protocol,
                port_range=str(rule.port),
                source_addresses=list(rule.sources),
            )
            for rule in args.rules
        ]
        outbound = [
            digitalocean.FirewallOutboundRuleArgs(
                protocol=protocol,
                port_range="1-65535" if protocol != "icmp" else None,
                destination_addresses=["0.0.0.0/0", "::/0"],
            )
            for protocol in ("tcp", "udp", "icmp")
        ]
        self.resources.append(
            digitalocean.Firewall(
                f"{name}-fw",
                name=f"kdf-remote-{name}",
                droplet_ids=[pulumi.Output.from_input(d).apply(int) for d in args.droplet_ids],
                inbound_rules=inbound,
                outbound_rules=outbound,
                opts=opts,
            )
        )

    def _ufw(self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions) -> None:
        if args.connection is None:
            raise ValueError("an existing-host firewall needs an SSH connection")
        self.resources.append(
            command.remote.Command(
                f"{name}-ufw",
                connection=args.connection,
                create=as_root(render_ufw_commands(args.rules), args.ssh_user),
                delete=as_root(render_ufw_removal(args.rules), args.ssh_user),
                opts=opts,
            )
        )
