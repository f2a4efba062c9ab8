"""Pure planning functions: firewall rule sets, the region x provider matrix, secret derivations."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _infra_settings import SHA
from _infra_settings import make_settings as make
from kdf_remote.infra.firewall_rules import (
    WORLD,
    FirewallPolicyError,
    FirewallRule,
    check_plan,
    forbidden_ports,
    plan_firewall,
    render_ufw_commands,
    render_ufw_removal,
)
from kdf_remote.infra.fleet_plan import plan_nodes, provider_regions
from kdf_remote.infra.secret_values import api_key_from_random, api_key_hash
from kdf_remote.infra.settings import Settings, parse_settings
from kdf_remote.kdf.ports import p2p_ports

pytestmark = pytest.mark.unit

AWS_REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1"]
DO_REGIONS = ["fra1", "nyc3", "sgp1", "ams3", "lon1"]


cidrs = st.lists(
    st.builds(
        lambda address, prefix: str(ipaddress.ip_network((address, prefix), strict=False)),
        st.integers(1 << 24, (223 << 24) - 1),
        st.integers(8, 32),
    ),
    min_size=1,
    max_size=4,
    unique=True,
)


@st.composite
def stack_settings(draw: st.DrawFn) -> Settings:
    allowed = draw(cidrs)
    low = draw(st.integers(10000, 20000))
    high = low + draw(st.integers(0, 20))
    extra: dict[str, object] = {
        "allowed_ips": allowed,
        "worker_ports": f"{low}-{high}",
        "max_workers": min(10, high - low + 1),
        "netid": draw(st.integers(0, 14428).filter(lambda n: n != 7777)),
        "p2p": {"enabled": draw(st.booleans())},
        "daemon_port": draw(st.sampled_from([443, 8000, 8443])),
    }
    if draw(st.booleans()):
        extra["kdf_compat"] = {"enabled": True, "port": 7000}
    if draw(st.booleans()):
        extra["ssh_allowed_ips"] = draw(cidrs)
    if draw(st.booleans()):
        extra["dns"] = {"zone": "Z0123456789", "fqdn": "kdf.example.com"}
        if draw(st.booleans()):
            extra["tls"] = {"mode": "letsencrypt", "email": "ops@example.com"}
    return make(**extra)


@settings(max_examples=150, deadline=None)
@given(stack_settings())
def test_firewall_plan_policy_holds_for_any_configuration(settings_: Settings) -> None:
    """No plan opens a KDF RPC port, SSH or the daemon to the world, or P2P when it is off."""
    rules = plan_firewall(settings_)
    by_purpose = {r.purpose: r for r in rules}
    forbidden = forbidden_ports(settings_)
    for rule in rules:
        assert rule.port not in forbidden
        if rule.purpose not in ("p2p", "p2p_wss", "acme"):
            assert not WORLD & set(rule.sources), rule
    assert by_purpose["ssh"].sources == settings_.ssh_allowed_ips
    assert by_purpose["daemon"].sources == settings_.allowed_ips
    assert by_purpose["daemon"].port == settings_.daemon_port
    assert ("p2p" in by_purpose) == settings_.p2p.enabled
    if settings_.p2p.enabled:
        tcp, wss = p2p_ports(settings_.netid)
        assert (by_purpose["p2p"].port, by_purpose["p2p_wss"].port) == (tcp, wss)
    assert ("kdf_compat" in by_purpose) == settings_.kdf_compat.enabled
    assert ("acme" in by_purpose) == (settings_.tls.mode == "letsencrypt")


def test_p2p_ports_follow_netid_8762() -> None:
    """With P2P on and the mainnet netid, exactly 42845 and 42855 open (kdf-facts 1.8)."""
    rules = plan_firewall(make(p2p={"enabled": True}))
    assert sorted(r.port for r in rules if r.purpose.startswith("p2p")) == [42845, 42855]


def test_check_plan_rejects_kdf_rpc_and_world_ssh() -> None:
    """The policy check itself refuses the two worst mistakes."""
    settings_ = make()
    with pytest.raises(FirewallPolicyError, match="KDF RPC"):
        check_plan((FirewallRule("daemon", 7783, ("203.0.113.7/32",)),), settings_)
    with pytest.raises(FirewallPolicyError, match="whole internet"):
        check_plan((FirewallRule("ssh", 22, ("0.0.0.0/0",)),), settings_)
    with pytest.raises(FirewallPolicyError, match="KDF RPC"):
        check_plan((FirewallRule("p2p", 9003, ("0.0.0.0/0",)),), settings_)


def test_ufw_rendering_allows_each_source_and_enables_last() -> None:
    """Each (rule, CIDR) becomes one ufw allow; SSH first; enable comes after every allow."""
    settings_ = make(p2p={"enabled": True})
    rules = plan_firewall(settings_)
    script = render_ufw_commands(rules)
    allows = [line for line in script.splitlines() if line.startswith("ufw allow")]
    assert len(allows) == sum(len(r.sources) for r in rules)
    assert "port 22" in allows[0]
    assert script.strip().splitlines()[-1] == "ufw --force enable"
    for line in allows:
        assert shlex.split(line)  # quoting is valid shell
    removal = render_ufw_removal(rules)
    assert "port 22 " not in removal + " " and "port 8000" in removal


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["aws", "do"]), st.integers(0, 4), st.integers(1, 3)),
        max_size=6,
    ),
    st.sampled_from(["aws", "do"]),
)
def test_fleet_matrix_one_provider_per_region(
    entries: list[tuple[str, int, int]], primary: str
) -> None:
    """Every node maps to exactly one (provider, region) entry; names are unique."""
    seen: set[tuple[str, str]] = set()
    workers = []
    for provider, index, count in entries:
        region = (AWS_REGIONS if provider == "aws" else DO_REGIONS)[index]
        if (provider, region) in seen:
            continue
        seen.add((provider, region))
        workers.append({"provider": provider, "region": region, "count": count})
    settings_ = make(
        provider=primary,
        region="us-east-1" if primary == "aws" else "fra1",
        fleet={"workers": workers},
    )
    nodes = plan_nodes(settings_)
    regions = provider_regions(nodes)
    assert len(regions) == len(set(regions))
    assert {n.provider_region for n in nodes} == set(regions)
    assert len({n.name for n in nodes}) == len(nodes)
    assert nodes[0].role == "primary"
    assert len(nodes) == 1 + sum(w["count"] for w in workers)  # type: ignore[misc]
    for node in nodes[1:]:
        assert node.region in node.name


def test_existing_host_needs_no_cloud_provider() -> None:
    """A custom stack plans one node and no provider."""
    settings_ = parse_settings(
        {
            "provider": "custom",
            "custom_host": '{"host": "192.0.2.10"}',
            "allowed_ips": '["203.0.113.7/32"]',
            "kdf_version": "2.1.0-beta",
            "kdf_url": "https://example.org/kdf.zip",
            "kdf_sha256": SHA,
        }
    )
    nodes = plan_nodes(settings_)
    assert [n.provider for n in nodes] == ["custom"]
    assert provider_regions(nodes) == ()


def test_api_key_has_the_daemon_key_format() -> None:
    """The deploy key is `kdfr_` + 43 characters, the daemon's own format; bad input is refused."""
    from kdf_remote.daemon.security.keystore import API_KEY_PATTERN

    key = api_key_from_random("aZ09" * 10 + "xyz")
    assert API_KEY_PATTERN.fullmatch(key), key
    for bad in ("short", "a" * 44, "a" * 42 + "-"):
        with pytest.raises(ValueError, match="43 letters and digits"):
            api_key_from_random(bad)


def test_api_key_hash_is_sha256_of_the_key() -> None:
    """key_hash is the `sha256:<hex>` form the daemon's config reader expects."""
    digest = api_key_hash("k" * 48)
    assert digest == "sha256:" + hashlib.sha256(b"k" * 48).hexdigest()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    with pytest.raises(ValueError, match="empty"):
        api_key_hash("")
