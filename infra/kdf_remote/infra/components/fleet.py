"""The worker fleet concept: extra nodes spread over regions, each with its own daemon.

Each worker is created with the cloud provider of its own region (one provider per region,
planned by :func:`~kdf_remote.infra.fleet_plan.provider_regions`), so a worker can never land in
another region by inheriting the wrong provider.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pulumi

from kdf_remote.infra.components.node import KdfNode, KdfNodeArgs
from kdf_remote.infra.fleet_plan import NodePlan

__all__ = ["Fleet", "FleetArgs", "WorkerEntry"]


@dataclass(frozen=True)
class WorkerEntry:
    """One element of the ``workers`` stack output (design.md)."""

    name: str
    region: str
    daemon_url: pulumi.Output[str]
    server_ip: pulumi.Output[str]


@dataclass(frozen=True)
class FleetArgs:
    """Inputs of :class:`Fleet`: the worker plans and how to build each worker's node args."""

    workers: tuple[NodePlan, ...]
    node_args: Callable[[NodePlan], KdfNodeArgs]
    tags: Mapping[str, str]


class Fleet(pulumi.ComponentResource):
    """All workers of a stack."""

    nodes: list[KdfNode]

    def __init__(
        self, name: str, args: FleetArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kdf-remote:infra:Fleet", name, None, opts)
        self.nodes = [
            KdfNode(plan.name, args.node_args(plan), opts=pulumi.ResourceOptions(parent=self))
            for plan in args.workers
        ]
        self.register_outputs({"workers": [node.daemon_url for node in self.nodes]})

    def entries(self) -> list[WorkerEntry]:
        """The workers as design.md's ``workers`` output lists them."""
        return [
            WorkerEntry(
                name=n.name, region=n.region, daemon_url=n.daemon_url, server_ip=n.public_ip
            )
            for n in self.nodes
        ]
