"""The kdf-remote Pulumi program: read settings once, wire the components, export the outputs.

``infra/__main__.py`` (the ``pulumi`` CLI's entry, see ``Pulumi.yaml``) and the Automation API
(:mod:`kdf_remote.infra.automation`, as an inline program) both run :func:`main`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
from pulumi.runtime import config as runtime_config

from kdf_remote.infra.bootstrap_script import InstallTarget
from kdf_remote.infra.cloud_sdks import aws, digitalocean, random
from kdf_remote.infra.components.certificate import PrivateCa, PrivateCaArgs
from kdf_remote.infra.components.fleet import Fleet, FleetArgs, WorkerEntry
from kdf_remote.infra.components.node import KdfNode, KdfNodeArgs
from kdf_remote.infra.components.server import (
    AwsServerProvider,
    DigitalOceanServerProvider,
    ExistingHostProvider,
    ServerProvider,
)
from kdf_remote.infra.components.ssh import SshIdentity, SshIdentityArgs
from kdf_remote.infra.fleet_plan import NodePlan, ProviderRegion, plan_nodes, provider_regions
from kdf_remote.infra.secret_values import API_KEY_RANDOM_CHARS, api_key_from_random, api_key_hash
from kdf_remote.infra.settings import NAMESPACE, Settings, parse_settings

__all__ = ["OUTPUT_NAMES", "StackOutputs", "build", "main", "read_config"]

OUTPUT_NAMES = (
    "daemon_url",
    "ca_cert_pem",
    "api_key",
    "server_ip",
    "region",
    "provider",
    "instance_id",
    "workers",
)
"""design.md "Stack outputs", plus ``kdf_rpc_url`` when ``kdf_compat`` is enabled."""


@dataclass(frozen=True)
class StackOutputs:
    """The stack outputs of design.md; ``api_key`` is a secret Output."""

    daemon_url: pulumi.Output[str]
    ca_cert_pem: pulumi.Output[str]
    api_key: pulumi.Output[str]
    server_ip: pulumi.Output[str]
    region: str
    provider: str
    instance_id: pulumi.Output[str]
    workers: pulumi.Output[list[dict[str, str]]]
    kdf_rpc_url: pulumi.Output[str] | None = None

    def exports(self) -> dict[str, object]:
        """Name -> value, exactly the keys ``pulumi stack output`` shows."""
        values: dict[str, object] = {name: getattr(self, name) for name in OUTPUT_NAMES}
        if self.kdf_rpc_url is not None:
            values["kdf_rpc_url"] = self.kdf_rpc_url
        return values


def read_config() -> dict[str, str]:
    """Every ``kdf-remote:`` key of the running stack, without the namespace.

    The key list comes from the runtime's config map because ``pulumi.Config`` can only look
    keys up, and a typo'd key must be reported rather than silently ignored.
    """
    prefix = f"{NAMESPACE}:"
    names = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    config = pulumi.Config(NAMESPACE)
    raw: dict[str, str] = {}
    for full in sorted(names):
        if not full.startswith(prefix):
            continue
        key = full[len(prefix) :]
        # Secret keys are read through get_secret so the SDK does not warn; the plain value is
        # only needed for validation here, and the secret Output is fetched again for use.
        value = (
            runtime_config.get_config(full)
            if runtime_config.is_config_secret(full)
            else config.get(key)
        )
        if value is not None:
            raw[key] = value
    return raw


def _tags(settings: Settings) -> dict[str, str]:
    return {
        "managed-by": "pulumi",
        "kdf-remote-project": pulumi.get_project(),
        "kdf-remote-stack": pulumi.get_stack(),
        **settings.tags,
    }


def _cloud_provider(region: ProviderRegion, tags: Mapping[str, str]) -> pulumi.ProviderResource:
    # Explicit providers do not inherit the stack's `aws:` / `digitalocean:` settings, so the
    # credentials selectors users set there are passed on by hand.
    if region.provider == "aws":
        return aws.Provider(
            region.resource_name,
            region=region.region,
            profile=pulumi.Config("aws").get("profile"),
            default_tags=aws.ProviderDefaultTagsArgs(tags=dict(tags)),
        )
    return digitalocean.Provider(
        region.resource_name, token=pulumi.Config("digitalocean").get_secret("token")
    )


def _server_provider(
    plan: NodePlan, settings: Settings, providers: Mapping[ProviderRegion, pulumi.ProviderResource]
) -> ServerProvider:
    if plan.provider == "aws":
        return AwsServerProvider(providers[plan.provider_region])
    if plan.provider == "do":
        return DigitalOceanServerProvider(providers[plan.provider_region])
    if settings.custom_host is None:
        raise ValueError("provider custom without custom_host passed validation")
    return ExistingHostProvider(settings.custom_host)


def _worker_output(entry: WorkerEntry) -> pulumi.Output[dict[str, str]]:
    def as_dict(values: list[str]) -> dict[str, str]:
        return {
            "name": entry.name,
            "region": entry.region,
            "daemon_url": values[0],
            "server_ip": values[1],
        }

    return pulumi.Output.all(entry.daemon_url, entry.server_ip).apply(as_dict)


def build(settings: Settings, *, target: InstallTarget | None = None) -> StackOutputs:
    """Create every resource of the stack and return its outputs.

    ``target`` says where every node's install script installs; None is a real server. The SSH
    bootstrap test passes a directory-tree target to run this very program's commands locally.
    """
    tags = _tags(settings)
    nodes = plan_nodes(settings)
    primary_plan, worker_plans = nodes[0], nodes[1:]
    providers = {region: _cloud_provider(region, tags) for region in provider_regions(nodes)}
    do_provider = next((p for r, p in providers.items() if r.provider == "do"), None)
    identity = (
        SshIdentity("deploy-ssh", SshIdentityArgs(do_provider=do_provider))
        if any(n.provider != "custom" for n in nodes)
        else None
    )
    ca = (
        PrivateCa("daemon-ca", PrivateCaArgs(common_name=f"kdf-remote {pulumi.get_stack()} CA"))
        if settings.tls.mode == "self_signed"
        else None
    )
    api_key = random.RandomPassword("api-key", length=API_KEY_RANDOM_CHARS, special=False)
    api_key_value: pulumi.Output[str] = pulumi.Output.secret(
        api_key.result.apply(api_key_from_random)
    )
    key_hash: pulumi.Output[str] = pulumi.Output.secret(api_key_value.apply(api_key_hash))
    custom_key = (
        pulumi.Config(NAMESPACE).get_secret("ssh_private_key")
        if settings.provider == "custom"
        else None
    )

    def node_args(plan: NodePlan) -> KdfNodeArgs:
        return KdfNodeArgs(
            plan=plan,
            settings=settings,
            server_provider=_server_provider(plan, settings, providers),
            api_key_hash=key_hash,
            tags={**tags, "kdf-remote-node": plan.name, "kdf-remote-role": plan.role},
            cloud_provider=providers.get(plan.provider_region),
            identity=identity,
            ca=ca,
            dns=settings.dns if plan.role == "primary" else None,
            custom_private_key=custom_key,
            target=target or InstallTarget(),
        )

    primary = KdfNode(primary_plan.name, node_args(primary_plan))
    fleet = Fleet("fleet", FleetArgs(workers=worker_plans, node_args=node_args, tags=tags))
    workers = pulumi.Output.all(*(_worker_output(entry) for entry in fleet.entries()))
    compat = settings.kdf_compat
    kdf_rpc_url = (
        primary.public_host.apply(lambda host: f"https://{host}:{compat.port}")
        if compat.enabled
        else None
    )
    return StackOutputs(
        daemon_url=primary.daemon_url,
        ca_cert_pem=ca.cert_pem if ca is not None else pulumi.Output.from_input(""),
        api_key=api_key_value,
        server_ip=primary.public_ip,
        region=settings.region,
        provider=settings.provider,
        instance_id=primary.instance_id,
        workers=workers.apply(list),
        kdf_rpc_url=kdf_rpc_url,
    )


def main() -> None:
    """Validate the stack's configuration, build the stack and export its outputs."""
    settings = parse_settings(read_config())
    for name, value in build(settings).exports().items():
        pulumi.export(name, value)
