"""The server concept: one machine that will run the daemon, behind one provider interface.

:class:`ServerProvider` is the seed's ``IServerProvider``: AWS EC2, a DigitalOcean droplet and an
existing host reached over SSH all yield a :class:`ProvisionedServer` (public address, instance
id, SSH user). :class:`Server` is the ComponentResource that owns whatever the provider creates.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pulumi

from kdf_remote.infra.cloud_init import gzip_user_data
from kdf_remote.infra.cloud_sdks import aws, digitalocean
from kdf_remote.infra.fleet_plan import NodePlan
from kdf_remote.infra.settings import CustomHost, Provider

__all__ = [
    "AwsServerProvider",
    "DigitalOceanServerProvider",
    "ExistingHostProvider",
    "ProvisionedServer",
    "Server",
    "ServerArgs",
    "ServerProvider",
]

# Debian publishes its official AMIs from this account (wiki.debian.org/Cloud/AmazonEC2Image).
DEBIAN_AMI_OWNER = "136693071363"
DEBIAN_AMI_NAME = "debian-12-amd64-*"
DO_IMAGE = "debian-12-x64"
ROOT_VOLUME_GB = 20


@dataclass(frozen=True)
class ServerArgs:
    """Inputs of :class:`Server`."""

    plan: NodePlan
    user_data: str
    """``#cloud-config`` text; ignored by the existing-host provider."""
    tags: Mapping[str, str]
    ssh_public_key: pulumi.Input[str]
    image: str | None = None
    ssh_user: str | None = None
    security_group_ids: Sequence[pulumi.Input[str]] = ()
    """AWS only: the firewall's security group, attached at launch."""
    do_ssh_key_ids: Sequence[pulumi.Input[str]] = ()
    """DigitalOcean only: account SSH keys installed for root."""


@dataclass(frozen=True)
class ProvisionedServer:
    """What every provider hands back."""

    public_ip: pulumi.Output[str]
    instance_id: pulumi.Output[str]
    ssh_user: str
    resources: list[pulumi.Resource] = field(default_factory=list)
    """Resources later steps must wait for (the instance, its address)."""


class ServerProvider(Protocol):
    """Creates one server's resources as children of ``parent``."""

    @property
    def kind(self) -> Provider:
        """Which implementation this is."""
        ...

    def provision(self, parent: pulumi.Resource, name: str, args: ServerArgs) -> ProvisionedServer:
        """Create the server and return how to reach it."""
        ...


@dataclass(frozen=True)
class AwsServerProvider:
    """An EC2 instance in the provider's region, with IMDSv2 required and an Elastic IP.

    The Elastic IP keeps the address (and so the certificate's IP SAN) stable across stops.
    """

    provider: pulumi.ProviderResource
    kind: Provider = "aws"

    def provision(self, parent: pulumi.Resource, name: str, args: ServerArgs) -> ProvisionedServer:
        """Create key pair, instance and Elastic IP."""
        opts = pulumi.ResourceOptions(parent=parent, provider=self.provider)
        tags = dict(args.tags)
        key = aws.ec2.KeyPair(f"{name}-key", public_key=args.ssh_public_key, tags=tags, opts=opts)
        ami: pulumi.Input[str]
        if args.image is not None:
            ami = args.image
        else:
            ami = aws.ec2.get_ami_output(
                most_recent=True,
                owners=[DEBIAN_AMI_OWNER],
                filters=[
                    aws.ec2.GetAmiFilterArgs(name="name", values=[DEBIAN_AMI_NAME]),
                    aws.ec2.GetAmiFilterArgs(name="architecture", values=["x86_64"]),
                ],
                opts=pulumi.InvokeOutputOptions(parent=parent, provider=self.provider),
            ).id
        instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=ami,
            instance_type=args.plan.size,
            key_name=key.key_name,
            vpc_security_group_ids=list(args.security_group_ids),
            user_data_base64=base64.b64encode(gzip_user_data(args.user_data)).decode(),
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_tokens="required",
                http_endpoint="enabled",
                http_put_response_hop_limit=1,
            ),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                encrypted=True,
                volume_type="gp3",
                volume_size=ROOT_VOLUME_GB,
                delete_on_termination=True,
                tags=tags,
            ),
            tags={**tags, "Name": f"kdf-remote-{name}"},
            # User data only bootstraps the first boot; later changes travel over SSH. A newer
            # Debian AMI must not replace a server holding wallets either.
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(ignore_changes=["user_data_base64", "ami"])
            ),
        )
        eip = aws.ec2.Eip(f"{name}-ip", domain="vpc", instance=instance.id, tags=tags, opts=opts)
        return ProvisionedServer(
            public_ip=eip.public_ip,
            instance_id=instance.id,
            ssh_user="admin",
            resources=[instance, eip],
        )


@dataclass(frozen=True)
class DigitalOceanServerProvider:
    """A droplet in the given region."""

    provider: pulumi.ProviderResource
    kind: Provider = "do"

    def provision(self, parent: pulumi.Resource, name: str, args: ServerArgs) -> ProvisionedServer:
        """Create the droplet."""
        opts = pulumi.ResourceOptions(parent=parent, provider=self.provider)
        droplet = digitalocean.Droplet(
            f"{name}-droplet",
            name=f"kdf-remote-{name}",
            image=args.image or DO_IMAGE,
            region=args.plan.region,
            size=args.plan.size,
            ssh_keys=list(args.do_ssh_key_ids),
            user_data=args.user_data,
            monitoring=True,
            ipv6=False,
            tags=do_tags(args.tags),
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(ignore_changes=["user_data", "image"])
            ),
        )
        return ProvisionedServer(
            public_ip=droplet.ipv4_address,
            instance_id=droplet.id,
            ssh_user="root",
            resources=[droplet],
        )


@dataclass(frozen=True)
class ExistingHostProvider:
    """A server that already exists; nothing is created, everything happens over SSH."""

    host: CustomHost
    kind: Provider = "custom"

    def provision(self, parent: pulumi.Resource, name: str, args: ServerArgs) -> ProvisionedServer:
        """Return the configured address; the host itself is not managed."""
        del parent, name, args
        return ProvisionedServer(
            public_ip=pulumi.Output.from_input(self.host.host),
            instance_id=pulumi.Output.from_input(f"custom:{self.host.host}"),
            ssh_user=self.host.user,
        )


def do_tags(tags: Mapping[str, str]) -> list[str]:
    """DigitalOcean tags are bare labels (letters, digits, ``:-_``): fold ``key=value`` in."""
    labels = []
    for key, value in sorted(tags.items()):
        label = f"{key}:{value}" if value else key
        labels.append("".join(c if c.isalnum() or c in ":-_" else "_" for c in label)[:255])
    return labels


class Server(pulumi.ComponentResource):
    """One server that will run the daemon."""

    public_ip: pulumi.Output[str]
    instance_id: pulumi.Output[str]
    ssh_user: str
    resources: list[pulumi.Resource]

    def __init__(
        self,
        name: str,
        args: ServerArgs,
        provider: ServerProvider,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("kdf-remote:infra:Server", name, None, opts)
        created = provider.provision(self, name, args)
        self.public_ip = created.public_ip
        self.instance_id = created.instance_id
        self.ssh_user = args.ssh_user or created.ssh_user
        self.resources = created.resources
        self.register_outputs({"public_ip": self.public_ip, "instance_id": self.instance_id})
