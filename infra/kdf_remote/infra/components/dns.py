"""The DNS record concept: an optional A record for a server (Route 53 or a DigitalOcean domain)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pulumi

from kdf_remote.infra.cloud_sdks import aws, digitalocean

__all__ = ["DnsRecord", "DnsRecordArgs"]

TTL_S = 300


@dataclass(frozen=True)
class DnsRecordArgs:
    """Inputs of :class:`DnsRecord`: ``zone`` is a Route 53 zone id or a DigitalOcean domain."""

    kind: Literal["aws", "do"]
    zone: str
    fqdn: str
    ip: pulumi.Input[str]
    provider: pulumi.ProviderResource


class DnsRecord(pulumi.ComponentResource):
    """An A record pointing ``fqdn`` at the server."""

    fqdn: str

    def __init__(
        self, name: str, args: DnsRecordArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kdf-remote:infra:DnsRecord", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        self.fqdn = args.fqdn
        if args.kind == "aws":
            aws.route53.Record(
                f"{name}-a",
                zone_id=args.zone,
                name=args.fqdn,
                type="A",
                ttl=TTL_S,
                records=[args.ip],
                opts=child,
            )
        else:
            digitalocean.DnsRecord(
                f"{name}-a",
                domain=args.zone,
                # DigitalOcean wants the name relative to the domain.
                name=args.fqdn.removesuffix("." + args.zone),
                type="A",
                ttl=TTL_S,
                value=args.ip,
                opts=child,
            )
        self.register_outputs({"fqdn": self.fqdn})
