"""Stack settings for the infra tests that build plans and renderings without a deployment."""

from __future__ import annotations

import json

from kdf_remote.infra.settings import Settings, parse_settings

__all__ = ["SHA", "make_settings"]

SHA = "8993a0d31ef7a3554089be77b0c587bae3e7a1aa075bd1ca9ae6db6b96ae0c31"
"""The ``kdf_sha256`` of the base settings."""


def make_settings(**extra: object) -> Settings:
    """An AWS stack in us-east-1 with a pinned KDF release, plus ``extra`` keys.

    String values are taken as given; anything else is passed as its JSON, as Pulumi config
    holds it.
    """
    raw = {
        "provider": "aws",
        "region": "us-east-1",
        "allowed_ips": '["203.0.113.7/32", "2001:db8::/64"]',
        "kdf_version": "2.1.0-beta",
        "kdf_url": "https://example.org/kdf.zip",
        "kdf_sha256": SHA,
    }
    raw.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return parse_settings(raw)
