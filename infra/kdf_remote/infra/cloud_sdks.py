"""The provider SDKs, imported in one place.

pulumi-digitalocean 4.x, pulumi-aws 7.x and pulumi-command 1.x emit DeprecationWarnings when
their modules load, for resources they still export; they say nothing about this program, and
the test suite turns warnings into errors.
"""

from __future__ import annotations

import warnings

import pulumi_aws as aws
import pulumi_command as command
import pulumi_random as random
import pulumi_tls as tls

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        category=DeprecationWarning,
        module=r"pulumi_(aws|digitalocean|command|tls|random)(\.|$)",
    )
    import pulumi_digitalocean as digitalocean

    # pulumi-aws loads submodules lazily, on first attribute access; load the ones used here
    # now, while the filter is in force.
    _LOADED = (
        aws.ec2.Instance,
        aws.vpc.SecurityGroupIngressRule,
        aws.route53.Record,
        command.remote.Command,
    )

__all__ = ["aws", "command", "digitalocean", "random", "tls"]
