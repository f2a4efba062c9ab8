"""Stack configuration is validated once, with errors that name the ``kdf-remote:`` key."""

from __future__ import annotations

import pytest

from kdf_remote.infra.settings import SettingsError, parse_settings

pytestmark = pytest.mark.unit

SHA = "8993a0d31ef7a3554089be77b0c587bae3e7a1aa075bd1ca9ae6db6b96ae0c31"


def base(**extra: str) -> dict[str, str]:
    raw = {
        "provider": "aws",
        "region": "us-east-1",
        "allowed_ips": '["203.0.113.7/32"]',
        "kdf_version": "2.1.0-beta",
        "kdf_url": "https://example.org/kdf.zip",
        "kdf_sha256": SHA,
    }
    raw.update(extra)
    return raw


def test_minimal_aws_config_gets_documented_defaults() -> None:
    """A minimal stack gets design.md's defaults: daemon 8000, KDF RPC 7783, workers 9000-9010."""
    settings = parse_settings(base())
    assert settings.daemon_port == 8000
    assert settings.kdf_rpc_port == 7783
    assert settings.worker_ports == (9000, 9010)
    assert settings.ssh_allowed_ips == settings.allowed_ips == ("203.0.113.7/32",)
    assert settings.package.startswith("kdf-remote[daemon]==")
    assert not settings.p2p.enabled
    assert not settings.kdf_compat.enabled


def test_custom_provider_reads_host() -> None:
    """An existing host is described by custom_host and needs no region."""
    raw = base(
        provider="custom", custom_host='{"host": "192.0.2.10", "user": "admin", "port": 2222}'
    )
    del raw["region"]
    settings = parse_settings(raw)
    assert settings.custom_host is not None
    assert (settings.custom_host.host, settings.custom_host.user, settings.custom_host.port) == (
        "192.0.2.10",
        "admin",
        2222,
    )
    assert settings.region == "custom"


@pytest.mark.parametrize(
    ("change", "key", "fragment"),
    [
        ({"provider": "gcp"}, "kdf-remote:provider", "aws, do or custom"),
        ({"region": "mars-1"}, "kdf-remote:region", "AWS region"),
        ({"allowed_ips": '["0.0.0.0/0"]'}, "kdf-remote:allowed_ips[0]", "never opened"),
        ({"allowed_ips": '["::/0"]'}, "kdf-remote:allowed_ips[0]", "never opened"),
        ({"allowed_ips": '["10.0.0.1/8"]'}, "kdf-remote:allowed_ips[0]", "host bits"),
        ({"allowed_ips": "[]"}, "kdf-remote:allowed_ips", "at least one"),
        ({"ssh_allowed_ips": '["0.0.0.0/0"]'}, "kdf-remote:ssh_allowed_ips[0]", "never opened"),
        ({"kdf_sha256": "abc"}, "kdf-remote:kdf_sha256", "64 lowercase hex"),
        ({"kdf_url": "http://example.org/k.zip"}, "kdf-remote:kdf_url", "https://"),
        ({"daemon_port": "70000"}, "kdf-remote:daemon_port", "1..65535"),
        ({"daemon_port": "7783"}, "kdf-remote:daemon_port", "kdf_rpc_port"),
        ({"kdf_rpc_port": "9005"}, "kdf-remote:kdf_rpc_port", "outside worker_ports"),
        ({"worker_ports": "9010-9000"}, "kdf-remote:worker_ports", "A <= B"),
        ({"netid": "7777"}, "kdf-remote:netid", "deprecated"),
        ({"netid": "20000"}, "kdf-remote:netid", "0..14428"),
        ({"kdf_compat": '{"enabled": true}'}, "kdf-remote:kdf_compat.port", "missing"),
        (
            {"kdf_compat": '{"enabled": true, "port": 8000}'},
            "kdf-remote:kdf_compat.port",
            "other than",
        ),
        ({"kdf_compat": '{"enabeld": true}'}, "kdf-remote:kdf_compat.enabeld", "one of the keys"),
        ({"tls": '{"mode": "letsencrypt", "email": "a@b.org"}'}, "kdf-remote:dns", "missing"),
        (
            {"dns": '{"zone": "Z123456", "fqdn": "Kdf.Example.com"}'},
            "kdf-remote:dns.fqdn",
            "lowercase",
        ),
        (
            {"fleet": '{"workers": [{"region": "eu-west-1", "provider": "custom"}]}'},
            "kdf-remote:fleet.workers[0].provider",
            "aws or do",
        ),
        (
            {"fleet": '{"workers": [{"region": "fra1", "provider": "aws"}]}'},
            "kdf-remote:fleet.workers[0].region",
            "AWS region",
        ),
        (
            {"fleet": '{"workers": [{"region": "eu-west-1"}, {"region": "eu-west-1"}]}'},
            "kdf-remote:fleet.workers",
            "one entry per",
        ),
        ({"alowed_ips": '["203.0.113.7/32"]'}, "kdf-remote:alowed_ips", "known key"),
        ({"log_level": "loud"}, "kdf-remote:log_level", "one of"),
        ({"package": "kdf-remote; rm -rf /"}, "kdf-remote:package", "kdf-remote[daemon]==VERSION"),
        ({"allowed_ips": "[203.0.113.7/32"}, "kdf-remote:allowed_ips", "valid JSON"),
    ],
)
def test_bad_values_name_the_key(change: dict[str, str], key: str, fragment: str) -> None:
    """Each bad value is reported against its fully qualified key with what was expected."""
    with pytest.raises(SettingsError) as caught:
        parse_settings(base(**change))
    assert caught.value.key == key, str(caught.value)
    assert str(caught.value).startswith(key + ":")
    assert fragment in str(caught.value)


def test_missing_required_keys_are_named() -> None:
    """A missing pin, provider or allow-list fails with 'missing' and the key."""
    for key in ("provider", "allowed_ips", "kdf_sha256", "region"):
        raw = base()
        del raw[key]
        with pytest.raises(SettingsError, match=f"^kdf-remote:{key}: missing, expected"):
            parse_settings(raw)


def test_custom_host_required_for_custom_provider() -> None:
    """provider custom without custom_host names custom_host."""
    with pytest.raises(SettingsError, match=r"^kdf-remote:custom_host: missing"):
        parse_settings(base(provider="custom"))


def test_secret_values_are_never_echoed() -> None:
    """A wrong ssh_private_key (a secret) is reported without its value."""
    secret = "-----BEGIN OPENSSH PRIVATE KEY----- hunter2"
    with pytest.raises(SettingsError) as caught:
        parse_settings(base(ssh_private_key=secret))
    assert "hunter2" not in str(caught.value)
    assert caught.value.key == "kdf-remote:ssh_private_key"


def test_fleet_and_letsencrypt_parse() -> None:
    """A fleet over three regions and Let's Encrypt with a DNS name validate into typed values."""
    settings = parse_settings(
        base(
            fleet='{"workers": [{"region": "eu-west-1"}, {"region": "ap-southeast-1", "count": 2},'
            ' {"region": "sgp1", "provider": "do", "size": "s-2vcpu-4gb"}]}',
            dns='{"zone": "Z0123456789ABC", "fqdn": "kdf.example.com"}',
            tls='{"mode": "letsencrypt", "email": "ops@example.com"}',
            p2p='{"enabled": true}',
        )
    )
    assert [(w.provider, w.region, w.count) for w in settings.fleet] == [
        ("aws", "eu-west-1", 1),
        ("aws", "ap-southeast-1", 2),
        ("do", "sgp1", 1),
    ]
    assert settings.tls.mode == "letsencrypt"
    assert settings.p2p.enabled
    assert settings.p2p.allowed_ips == ("0.0.0.0/0", "::/0")
