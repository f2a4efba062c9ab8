"""The region x provider matrix of a stack: which servers exist and which provider drives each.

Pure planning (style-and-security A7.2): the program turns :func:`plan_nodes` into resources and
creates exactly one cloud provider per entry of :func:`provider_regions`, so every server in a
region shares that region's provider and no two providers claim one region.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdf_remote.infra.settings import Provider, Settings

__all__ = ["NodePlan", "ProviderRegion", "default_size", "plan_nodes", "provider_regions"]

_DEFAULT_SIZES: dict[Provider, str] = {"aws": "t3.small", "do": "s-1vcpu-2gb", "custom": "existing"}
_SHORT: dict[Provider, str] = {"aws": "aws", "do": "do", "custom": "host"}


@dataclass(frozen=True, order=True)
class ProviderRegion:
    """One cloud provider instance: a provider kind pinned to a region."""

    provider: Provider
    region: str

    @property
    def resource_name(self) -> str:
        """Pulumi name of the provider resource, e.g. ``aws-eu-west-1``."""
        return f"{_SHORT[self.provider]}-{self.region}"


@dataclass(frozen=True)
class NodePlan:
    """One server running a daemon: the primary, or a fleet worker."""

    name: str
    role: str
    provider: Provider
    region: str
    size: str

    @property
    def provider_region(self) -> ProviderRegion:
        """The provider instance this node's resources are created with."""
        return ProviderRegion(self.provider, self.region)


def default_size(provider: Provider) -> str:
    """A size with room for the daemon, one KDF and the bootstrap's memory requirement."""
    return _DEFAULT_SIZES[provider]


def plan_nodes(settings: Settings) -> tuple[NodePlan, ...]:
    """The primary first, then workers named ``worker-<region>-<n>`` in configuration order."""
    nodes = [
        NodePlan(
            name="primary",
            role="primary",
            provider=settings.provider,
            region=settings.region,
            size=settings.size or default_size(settings.provider),
        )
    ]
    for spec in settings.fleet:
        for index in range(1, spec.count + 1):
            nodes.append(
                NodePlan(
                    name=f"worker-{spec.region}-{index}"
                    if _unique_region(settings, spec.region)
                    else f"worker-{spec.provider}-{spec.region}-{index}",
                    role="worker",
                    provider=spec.provider,
                    region=spec.region,
                    size=spec.size or default_size(spec.provider),
                )
            )
    return tuple(nodes)


def _unique_region(settings: Settings, region: str) -> bool:
    # AWS and DigitalOcean slugs never collide today, but names must stay unique if they did.
    return sum(1 for spec in settings.fleet if spec.region == region) == 1


def provider_regions(nodes: tuple[NodePlan, ...]) -> tuple[ProviderRegion, ...]:
    """The distinct cloud (provider, region) pairs, sorted; existing hosts need no provider."""
    return tuple(sorted({n.provider_region for n in nodes if n.provider != "custom"}))
