"""Policy checks on the real resource inputs of the Pulumi program, run under Pulumi's mocks.

Every failure names the URN of the offending resource.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from infra_mocks import (  # type: ignore[import-not-found]
    SECRET_SIG,
    STACKS_DIR,
    Deployment,
    Registered,
    config_for,
    deploy,
    stack_config,
)

from kdf_remote.infra.program import OUTPUT_NAMES
from kdf_remote.infra.secret_values import api_key_from_random
from kdf_remote.kdf.ports import p2p_ports

pytestmark = pytest.mark.unit

WORLD = {"0.0.0.0/0", "::/0"}
KDF_RPC_PORTS = {7783, *range(9000, 9011)}
TAGGED_DICT = {
    "aws:ec2/instance:Instance",
    "aws:ec2/securityGroup:SecurityGroup",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
    "aws:ec2/eip:Eip",
    "aws:ec2/keyPair:KeyPair",
}
TAGGED_LIST = {"digitalocean:index/droplet:Droplet"}
# Types that take no labels at all (or whose `tags` argument means something else): listed so a
# new resource type cannot slip past the tag policy unnoticed.
UNTAGGABLE = {
    "pulumi:providers:aws",  # tags every AWS resource through default_tags instead
    "pulumi:providers:digitalocean",
    "digitalocean:index/firewall:Firewall",  # `tags` selects droplets to protect
    "digitalocean:index/sshKey:SshKey",
    "digitalocean:index/dnsRecord:DnsRecord",
    "aws:route53/record:Record",
    "command:remote:Command",
    "tls:index/privateKey:PrivateKey",
    "tls:index/selfSignedCert:SelfSignedCert",
    "tls:index/certRequest:CertRequest",
    "tls:index/locallySignedCert:LocallySignedCert",
    "random:index/randomPassword:RandomPassword",
    "random:index/randomBytes:RandomBytes",
}

FLEET = (
    '{"workers": [{"region": "eu-west-1"}, {"region": "ap-southeast-1"}, {"region": "us-west-2"}]}'
)
SCENARIOS: dict[str, dict[str, str]] = {
    "aws": config_for("aws"),
    "do": config_for("do", dns='{"zone": "example.com", "fqdn": "kdf.example.com"}'),
    "custom": config_for("custom", kdf_compat='{"enabled": true, "port": 7000}'),
    "aws-fleet-p2p": config_for("aws", fleet=FLEET, p2p='{"enabled": true}'),
    "do-fleet": config_for(
        "do", fleet='{"workers": [{"region": "sgp1"}, {"region": "nyc3", "count": 2}]}'
    ),
    "mixed-fleet": config_for(
        "aws", fleet='{"workers": [{"region": "eu-west-1"}, {"region": "fra1", "provider": "do"}]}'
    ),
    "aws-letsencrypt": config_for(
        "aws",
        dns='{"zone": "Z0123456789", "fqdn": "kdf.example.com"}',
        tls='{"mode": "letsencrypt", "email": "ops@example.com"}',
    ),
}


@pytest.fixture(autouse=True)
def _agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Existing-host stacks reach the host through an ssh-agent when no key is configured."""
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/test-agent.sock")


@pytest.fixture(scope="module")
def deployments() -> dict[str, Deployment]:
    """Each scenario built once for the whole module (the program is deterministic)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSH_AUTH_SOCK", "/run/test-agent.sock")
        return {name: deploy(config) for name, config in SCENARIOS.items()}


def _ingress(d: Deployment) -> Iterator[tuple[Registered, int, int, list[str]]]:
    """(resource, from port, to port, sources) for every inbound rule, whatever the provider."""
    for r in d.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        source = r.inputs.get("cidrIpv4") or r.inputs.get("cidrIpv6")
        yield r, int(r.inputs["fromPort"]), int(r.inputs["toPort"]), [source]
    for r in d.of_type("digitalocean:index/firewall:Firewall"):
        for rule in r.inputs.get("inboundRules", []):
            low, _, high = str(rule["portRange"]).partition("-")
            yield r, int(low), int(high or low), list(rule.get("sourceAddresses", []))
    for r in d.of_type("command:remote:Command"):
        if r.name.endswith("-ufw"):
            for m in re.finditer(r"from (\S+) to any port (\d+)", r.inputs["create"]):
                yield r, int(m.group(2)), int(m.group(2)), [m.group(1)]


def _world_ports_allowed(config: dict[str, str]) -> set[int]:
    allowed: set[int] = set()
    if '"enabled": true' in config.get("kdf-remote:p2p", ""):
        allowed |= set(p2p_ports(8762))
    if "letsencrypt" in config.get("kdf-remote:tls", ""):
        allowed.add(80)
    return allowed


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_no_port_open_to_the_world_except_configured(
    scenario: str, deployments: dict[str, Deployment]
) -> None:
    """0.0.0.0/0 and ::/0 reach only P2P (when enabled) and ACME (Let's Encrypt) ports."""
    d = deployments[scenario]
    allowed = _world_ports_allowed(SCENARIOS[scenario])
    rules = list(_ingress(d))
    assert rules, f"{scenario}: no inbound rule found at all"
    for resource, low, high, sources in rules:
        if WORLD & set(sources):
            assert low == high and low in allowed, (
                f"{resource.urn}: port {low}-{high} open to {sources}"
            )
    for sg in d.of_type("aws:ec2/securityGroup:SecurityGroup"):
        assert not sg.inputs.get("ingress"), f"{sg.urn}: inline ingress bypasses the rule policy"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_ssh_and_daemon_only_from_allowed_ips(
    scenario: str, deployments: dict[str, Deployment]
) -> None:
    """SSH and the daemon port are reachable from exactly the configured CIDRs."""
    d = deployments[scenario]
    allowed = {"203.0.113.7/32", "2001:db8::/64"}
    for port in (22, 8000):
        sources = {s for r, low, _, ss in _ingress(d) if low == port for s in ss}
        assert sources == allowed, f"{scenario}: port {port} open to {sources}"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_kdf_rpc_port_never_open(scenario: str, deployments: dict[str, Deployment]) -> None:
    """Neither KDF's RPC port nor any worker RPC port has an inbound rule, from any source."""
    for resource, low, high, sources in _ingress(deployments[scenario]):
        opened = set(range(low, high + 1))
        assert not opened & KDF_RPC_PORTS, f"{resource.urn}: opens {low}-{high} to {sources}"


def _secret_values(d: Deployment) -> set[str]:
    """Every secret the program generated, plus what it derives from them."""
    values: set[str] = set()
    for r in d.resources:
        if r.type == "random:index/randomPassword:RandomPassword":
            values.add(r.inputs["result"])
            if r.name == "api-key":
                key = api_key_from_random(r.inputs["result"])
                values.add(key)
                values.add(hashlib.sha256(key.encode()).hexdigest())
        elif r.type == "random:index/randomBytes:RandomBytes":
            values.add(r.inputs["base64"])
        elif r.type == "tls:index/privateKey:PrivateKey":
            values.add(r.inputs["privateKeyPem"].strip().splitlines()[1])
            values.add(r.inputs["privateKeyOpenssh"].strip().splitlines()[1])
    assert values
    return values


def _plain_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, string) for every string in raw inputs that is not wrapped as a secret."""
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return
        for key, item in value.items():
            yield from _plain_strings(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _plain_strings(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_secrets_only_travel_as_secrets(scenario: str, deployments: dict[str, Deployment]) -> None:
    """No generated secret (or its hash) appears in any input that is not marked secret."""
    d = deployments[scenario]
    secrets = _secret_values(d)
    for r in d.resources:
        if r.type.startswith(("random:", "tls:")):
            continue  # the generators hold their own results in (encrypted) state
        for path, text in _plain_strings(r.raw_inputs):
            for secret in secrets:
                assert secret not in text, f"{r.urn}: secret material in plain input {path}"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_secret_files_arrive_on_stdin_marked_secret(
    scenario: str, deployments: dict[str, Deployment]
) -> None:
    """Each secret-delivery command carries its content on stdin, as a secret; SSH keys too."""
    d = deployments[scenario]
    commands = d.of_type("command:remote:Command")
    delivery = [c for c in commands if c.name.endswith(("-jwt-key", "-daemon-config", "-tls-key"))]
    assert delivery, f"{scenario}: no secret delivery command"
    for command in delivery:
        assert "stdin" in command.secret_paths, f"{command.urn}: stdin is not secret"
        assert "umask 077" in command.inputs["create"], f"{command.urn}: file not created private"
        assert re.search(r"chmod 0600", command.inputs["create"]), f"{command.urn}: not 0600"
    for command in commands:
        connection = command.raw_inputs["connection"]
        key_secret = SECRET_SIG in connection or SECRET_SIG in connection.get("privateKey", {})
        assert key_secret, f"{command.urn}: the SSH connection (and its key) is not secret"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_deliveries_are_exactly_what_the_daemon_reads(
    scenario: str, deployments: dict[str, Deployment]
) -> None:
    """Each node gets its config, JWT key and (self-signed mode) TLS files; no KDF rpc_password,
    which the daemon generates for each instance itself."""
    d = deployments[scenario]
    for r in d.resources:
        assert "rpc-password" not in r.name, f"{r.urn}: the program makes a KDF rpc_password"
    bootstraps = d.of_type("kdf-remote:infra:Bootstrap")
    assert bootstraps, f"{scenario}: no bootstrap"
    for bootstrap in bootstraps:
        delivered = {
            c.name.removeprefix(bootstrap.name + "-")
            for c in d.children_of(bootstrap)
            if "umask 077" in c.inputs["create"]
        }
        expected = {"daemon-config", "jwt-key"}
        if any(r.type == "tls:index/locallySignedCert:LocallySignedCert" for r in d.resources):
            expected |= {"tls-key", "tls-cert", "tls-ca"}
        assert delivered == expected, f"{bootstrap.urn}: delivers {sorted(delivered)}"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_api_key_output_is_secret(scenario: str, deployments: dict[str, Deployment]) -> None:
    """The exported API key is a secret output; nothing else needs to be."""
    d = deployments[scenario]
    assert "api_key" in d.secret_outputs
    assert re.fullmatch(r"kdfr_[A-Za-z0-9]{43}", d.outputs["api_key"]), d.outputs["api_key"]


def _user_data(r: Registered) -> str:
    if r.type == "aws:ec2/instance:Instance":
        return gzip.decompress(base64.b64decode(r.inputs["userDataBase64"])).decode()
    return str(r.inputs["userData"])


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_user_data_holds_no_secret(scenario: str, deployments: dict[str, Deployment]) -> None:
    """Cloud user data is readable from the metadata service: it must carry no secret at all."""
    d = deployments[scenario]
    servers = d.of_type("aws:ec2/instance:Instance") + d.of_type(
        "digitalocean:index/droplet:Droplet"
    )
    if scenario == "custom":
        assert not servers
        return
    assert servers
    secrets = _secret_values(d)
    for server in servers:
        text = _user_data(server)
        assert text.startswith("#cloud-config\n"), server.urn
        assert "PRIVATE KEY" not in text, f"{server.urn}: a private key in user data"
        assert "sha256:" not in text, f"{server.urn}: an API key hash in user data"
        for secret in secrets:
            assert secret not in text, f"{server.urn}: secret material in user data"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_taggable_resource_is_tagged(
    scenario: str, deployments: dict[str, Deployment]
) -> None:
    """AWS resources carry the stack tags, droplets the stack labels; no type is unaccounted for."""
    d = deployments[scenario]
    for r in d.resources:
        if r.type.startswith("kdf-remote:infra:"):
            continue
        if r.type in TAGGED_DICT:
            tags = r.inputs.get("tags") or {}
            assert tags.get("managed-by") == "pulumi", f"{r.urn}: missing tags {tags}"
            assert tags.get("kdf-remote-stack") == "test", f"{r.urn}: missing stack tag"
        elif r.type in TAGGED_LIST:
            labels = r.inputs.get("tags") or []
            assert "kdf-remote-stack:test" in labels, f"{r.urn}: missing labels {labels}"
        else:
            assert r.type in UNTAGGABLE, f"{r.urn}: type {r.type} is neither tagged nor listed"
    for provider in d.of_type("pulumi:providers:aws"):
        assert "managed-by" in str(provider.inputs.get("defaultTags")), provider.urn


def test_fleet_has_one_provider_per_region_and_workers_in_their_region(
    deployments: dict[str, Deployment],
) -> None:
    """Four AWS regions, four providers; each worker's instance uses its own region's provider."""
    d = deployments["aws-fleet-p2p"]
    providers = d.of_type("pulumi:providers:aws")
    regions = [p.inputs["region"] for p in providers]
    assert sorted(regions) == sorted({"us-east-1", "eu-west-1", "ap-southeast-1", "us-west-2"})
    instances = d.of_type("aws:ec2/instance:Instance")
    assert len(instances) == 4
    for instance in instances:
        node = instance.inputs["tags"]["kdf-remote-node"]
        provider = d.provider_of(instance)
        assert provider is not None, f"{instance.urn}: created with the default provider"
        expected = "us-east-1" if node == "primary" else node.removeprefix("worker-")[:-2]
        assert provider.inputs["region"] == expected, (
            f"{instance.urn}: in {provider.inputs['region']}"
        )
    workers = d.outputs["workers"]
    assert sorted(w["region"] for w in workers) == ["ap-southeast-1", "eu-west-1", "us-west-2"]


@pytest.mark.parametrize("scenario", ["do-fleet", "mixed-fleet"])
def test_droplets_use_their_region_provider(
    scenario: str, deployments: dict[str, Deployment]
) -> None:
    """DigitalOcean workers: one provider per region, and each droplet's region matches it."""
    d = deployments[scenario]
    names = [p.name for p in d.of_type("pulumi:providers:digitalocean")]
    assert len(names) == len(set(names))
    for droplet in d.of_type("digitalocean:index/droplet:Droplet"):
        provider = d.provider_of(droplet)
        assert provider is not None, droplet.urn
        assert provider.name == f"do-{droplet.inputs['region']}", droplet.urn


def test_aws_instances_require_imdsv2(deployments: dict[str, Deployment]) -> None:
    """Every EC2 instance requires IMDSv2 tokens and encrypts its root volume."""
    for scenario in ("aws", "aws-fleet-p2p", "mixed-fleet"):
        for instance in deployments[scenario].of_type("aws:ec2/instance:Instance"):
            options = instance.inputs["metadataOptions"]
            assert options["httpTokens"] == "required", instance.urn
            assert options["httpPutResponseHopLimit"] == 1, instance.urn
            assert instance.inputs["rootBlockDevice"]["encrypted"] is True, instance.urn


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_outputs_follow_design(scenario: str, deployments: dict[str, Deployment]) -> None:
    """Exactly design.md's outputs (kdf_rpc_url only with kdf_compat), with usable values."""
    d = deployments[scenario]
    config = SCENARIOS[scenario]
    expected = set(OUTPUT_NAMES) | ({"kdf_rpc_url"} if "kdf-remote:kdf_compat" in config else set())
    assert set(d.outputs) == expected
    outputs = d.outputs
    assert re.fullmatch(r"https://[a-z0-9.-]+:8000", outputs["daemon_url"]), outputs["daemon_url"]
    ipaddress.ip_address(outputs["server_ip"])
    assert outputs["provider"] == config["kdf-remote:provider"]
    assert outputs["region"]
    assert outputs["instance_id"]
    if "letsencrypt" in config.get("kdf-remote:tls", ""):
        assert outputs["ca_cert_pem"] == ""
    else:
        assert outputs["ca_cert_pem"].startswith("-----BEGIN CERTIFICATE-----")
    for worker in outputs["workers"]:
        assert set(worker) == {"name", "region", "daemon_url", "server_ip"}
        assert worker["daemon_url"] == f"https://{worker['server_ip']}:8000"
    if "kdf_rpc_url" in expected:
        assert outputs["kdf_rpc_url"].endswith(":7000")


def test_dns_name_is_in_daemon_url_and_certificate(deployments: dict[str, Deployment]) -> None:
    """With a DNS record, the daemon URL uses the name and the certificate carries name and IP."""
    d = deployments["do"]
    assert d.outputs["daemon_url"] == "https://kdf.example.com:8000"
    record = d.of_type("digitalocean:index/dnsRecord:DnsRecord")[0]
    assert (record.inputs["name"], record.inputs["domain"]) == ("kdf", "example.com")
    assert record.inputs["value"] == d.outputs["server_ip"]
    csr = d.of_type("tls:index/certRequest:CertRequest")[0]
    assert csr.inputs["dnsNames"] == ["kdf.example.com"], csr.urn
    assert csr.inputs["ipAddresses"] == [d.outputs["server_ip"]], csr.urn


def test_bootstrap_steps_run_in_order(deployments: dict[str, Deployment]) -> None:
    """install -> secret files -> restart -> health; a secret change re-triggers the restart."""
    d = deployments["aws"]
    install = d.named("primary-bootstrap-install")
    restart = d.named("primary-bootstrap-restart")
    health = d.named("primary-bootstrap-health")
    files = [d.named(f"primary-bootstrap-{n}") for n in ("daemon-config", "jwt-key", "tls-key")]
    for item in files:
        assert install.urn in item.dependencies, f"{item.urn}: not after install"
        assert item.urn in restart.dependencies, f"{restart.urn}: not after {item.name}"
    assert restart.urn in health.dependencies, health.urn
    assert "triggers" in restart.secret_paths or any(
        p.startswith("triggers") for p in restart.secret_paths
    ), restart.urn
    assert "/v1/health" in health.inputs["create"]
    assert "--cacert" in health.inputs["create"]
    assert d.outputs["server_ip"] in health.inputs["create"], "health check must verify the IP SAN"


def test_existing_host_runs_ufw_and_uses_the_agent(deployments: dict[str, Deployment]) -> None:
    """provider custom: no cloud resource, ufw manages the firewall, SSH goes through the agent."""
    d = deployments["custom"]
    assert not [
        r for r in d.resources if r.type.startswith(("aws:", "digitalocean:", "pulumi:providers"))
    ]
    ufw = d.named("primary-firewall-ufw")
    assert "ufw --force enable" in ufw.inputs["create"]
    install = d.named("primary-bootstrap-install")
    assert ufw.urn in install.dependencies or any(
        dep.endswith("primary-firewall") for dep in install.dependencies
    ), install.urn
    assert install.inputs["connection"]["agentSocketPath"] == "/run/test-agent.sock"
    assert install.inputs["connection"]["user"] == "admin"


@pytest.mark.parametrize(
    "stack_file", sorted(STACKS_DIR.glob("Pulumi.*.yaml")), ids=lambda p: p.name
)
def test_example_stack_loads_and_builds(stack_file: Path) -> None:
    """Each example stack in stacks/ validates and builds with the outputs design.md lists."""
    config, secrets = stack_config(stack_file)
    deployment = deploy(config, secret_keys=tuple(secrets), stack=stack_file.stem.split(".", 1)[1])
    assert set(OUTPUT_NAMES) <= set(deployment.outputs)
    assert "api_key" in deployment.secret_outputs
    for resource, low, _, _ in _ingress(deployment):
        assert low not in KDF_RPC_PORTS, resource.urn


def test_example_stacks_cover_every_deployment_shape() -> None:
    """stacks/ holds an AWS server, a droplet, an existing host and a three-region fleet."""
    shapes = {}
    for path in STACKS_DIR.glob("Pulumi.*.yaml"):
        config, _ = stack_config(path)
        shapes[path.name] = (config["kdf-remote:provider"], "kdf-remote:fleet" in config)
    assert set(shapes.values()) >= {("aws", False), ("do", False), ("custom", False), ("aws", True)}
