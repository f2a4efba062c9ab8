"""Run the Pulumi program against Pulumi's mocks and record what it asked the engine for.

Every registered resource is kept with its URN, type, parent, provider reference, the inputs as
the engine would see them, and which input paths carried a secret marker, so policy tests can
assert on real resource inputs and name the URN when they fail.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from google.protobuf import json_format  # type: ignore[import-untyped]
from pulumi.runtime import config as runtime_config
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks

from kdf_remote.infra.bootstrap_script import InstallTarget
from kdf_remote.infra.program import build, read_config
from kdf_remote.infra.settings import parse_settings

SECRET_SIG = "4dabf18193072939515e22adb298388d"
STACKS_DIR = Path(__file__).resolve().parents[2] / "stacks"


@dataclass
class Registered:
    """One resource the program registered."""

    urn: str
    type: str
    name: str
    parent: str
    provider: str
    inputs: dict[str, Any]
    raw_inputs: dict[str, Any]
    """The inputs as serialized for the engine: secrets still wrapped in their marker."""
    secret_paths: set[str]
    dependencies: set[str]
    resource_id: str = ""


@dataclass
class Deployment:
    """Everything a mocked `pulumi up` produced."""

    resources: list[Registered]
    outputs: dict[str, Any]
    secret_outputs: set[str]
    providers: dict[str, Registered] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[Registered]:
        """Resources of one type token."""
        return [r for r in self.resources if r.type == type_]

    def by_urn(self, urn: str) -> Registered:
        """The resource with this URN."""
        return next(r for r in self.resources if r.urn == urn)

    def provider_of(self, resource: Registered) -> Registered | None:
        """The explicit provider resource a resource was created with, if any."""
        if not resource.provider:
            return None
        urn = resource.provider.rsplit("::", 1)[0]
        return next((r for r in self.resources if r.urn == urn), None)

    def children_of(self, parent: Registered) -> list[Registered]:
        """Resources whose parent is ``parent``."""
        return [r for r in self.resources if r.parent == parent.urn]

    def named(self, name: str) -> Registered:
        """The resource with this logical name."""
        matches = [r for r in self.resources if r.name == name]
        assert len(matches) == 1, f"{len(matches)} resources named {name}"
        return matches[0]


def unwrap(value: Any) -> Any:
    """The value with every secret wrapper replaced by what it wraps."""
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return unwrap(value.get("value"))
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def _secret_paths(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            yield path
            return
        for key, item in value.items():
            yield from _secret_paths(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _secret_paths(item, f"{path}[{index}]")


def _close_thread_loop() -> None:
    """Close the event loop the mock monitor made for this executor thread.

    The mock monitor runs in executor threads and creates one loop per thread that nothing ever
    closes; with warnings as errors, the ResourceWarning of each leaked loop would fail a test.
    """
    if threading.current_thread() is threading.main_thread():
        return
    with contextlib.suppress(RuntimeError):
        loop = asyncio.get_event_loop()
        if not loop.is_running():
            loop.close()
            asyncio.set_event_loop(None)


class RecordingMonitor(MockMonitor):
    """A MockMonitor that keeps the raw request of every registration."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.records: list[Registered] = []

    def RegisterResource(self, request: Any) -> Any:
        try:
            response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        finally:
            _close_thread_loop()
        raw = json_format.MessageToDict(request.object)
        if request.type != "pulumi:pulumi:Stack":
            registration = self.resources.get(response.urn)
            self.records.append(
                Registered(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent,
                    provider=request.provider,
                    inputs=unwrap(dict(registration.state)) if registration else {},
                    raw_inputs=raw,
                    secret_paths=set(_secret_paths(raw)),
                    dependencies=set(request.dependencies),
                    resource_id=response.id,
                )
            )
        return response

    def Invoke(self, request: Any) -> Any:
        try:
            return super().Invoke(request)  # type: ignore[no-untyped-call]
        finally:
            _close_thread_loop()


def _fake_key(name: str) -> str:
    return base64.b64encode(hashlib.sha256(name.encode()).digest()).decode()


def _pem(label: str, name: str) -> str:
    return f"-----BEGIN {label}-----\n{_fake_key(name)}\n-----END {label}-----\n"


class KdfMocks(Mocks):
    """Cloud and crypto resources answer with plausible, deterministic outputs."""

    def __init__(self) -> None:
        self.counter = 0

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.counter += 1
        state = dict(args.inputs)
        t = args.typ
        if t == "aws:ec2/eip:Eip":
            state["publicIp"] = f"198.51.100.{self.counter % 250 + 1}"
        elif t == "digitalocean:index/droplet:Droplet":
            state["ipv4Address"] = f"203.0.113.{self.counter % 250 + 1}"
            return f"{40000 + self.counter}", state
        elif t == "tls:index/privateKey:PrivateKey":
            state["privateKeyPem"] = _pem("PRIVATE KEY", args.name + "/private")
            state["privateKeyOpenssh"] = _pem("OPENSSH PRIVATE KEY", args.name + "/openssh")
            state["publicKeyOpenssh"] = f"ssh-ed25519 {_fake_key(args.name)}\n"
        elif t in (
            "tls:index/selfSignedCert:SelfSignedCert",
            "tls:index/locallySignedCert:LocallySignedCert",
        ):
            state["certPem"] = (
                f"-----BEGIN CERTIFICATE-----\n{_fake_key(args.name)}\n-----END CERTIFICATE-----\n"
            )
        elif t == "tls:index/certRequest:CertRequest":
            state["certRequestPem"] = _pem("CERTIFICATE REQUEST", args.name)
        elif t == "random:index/randomPassword:RandomPassword":
            state["result"] = (
                _fake_key(args.name).replace("+", "x").replace("/", "y").replace("=", "z") * 2
            )[: int(args.inputs.get("length", 32))]
        elif t == "random:index/randomBytes:RandomBytes":
            raw = hashlib.sha512(args.name.encode()).digest()
            state["base64"] = base64.b64encode(raw).decode()
            state["hex"] = raw.hex()
        elif t == "aws:ec2/keyPair:KeyPair":
            state["keyName"] = f"{args.name}-generated"
        elif t == "command:remote:Command":
            state["stdout"] = "ok"
        return f"{args.name}-id", state

    def call(self, args: MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        if args.token == "aws:ec2/getAmi:getAmi":
            return {"id": "ami-0123456789abcdef0", "imageId": "ami-0123456789abcdef0"}, []
        raise AssertionError(f"the program called an unexpected data source: {args.token}")


def stack_config(path: Path) -> tuple[dict[str, str], list[str]]:
    """Load ``stacks/Pulumi.<stack>.yaml`` the way the Pulumi CLI hands config to a program.

    Structured values become JSON text and scalars plain text; ``secure:`` values are secrets.
    """
    import json

    document = yaml.safe_load(path.read_text())
    config: dict[str, str] = {}
    secrets: list[str] = []
    for key, value in (document.get("config") or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            secrets.append(key)
            config[key] = "<encrypted>"
        elif isinstance(value, str):
            config[key] = value
        elif isinstance(value, bool):
            config[key] = "true" if value else "false"
        elif isinstance(value, (int, float)):
            config[key] = str(value)
        else:
            config[key] = json.dumps(value)
    return config, secrets


def deploy(
    config: Mapping[str, str],
    *,
    secret_keys: tuple[str, ...] = (),
    stack: str = "test",
    mocks: Mocks | None = None,
    target: InstallTarget | None = None,
) -> Deployment:
    """Build the program under mocks with full config keys (``kdf-remote:provider``, ...).

    ``mocks`` defaults to :class:`KdfMocks`; ``target`` is passed to the program's ``build``.
    """
    mocks = mocks or KdfMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(
        mocks, project="kdf-remote", stack=stack, preview=False, monitor=monitor
    )
    runtime_config.set_all_config(dict(config), list(secret_keys))
    resolved: dict[str, Any] = {}
    secret: set[str] = set()

    async def collect(exports: dict[str, Any]) -> None:
        for name, value in exports.items():
            output = pulumi.Output.from_input(value)
            resolved[name] = await output.future()
            if await output.is_secret():
                secret.add(name)

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> pulumi.Output[None]:
        outputs = build(parse_settings(read_config()), target=target)
        return pulumi.Output.from_input(collect(outputs.exports()))

    program()
    return Deployment(resources=list(monitor.records), outputs=resolved, secret_outputs=secret)


BASE_CONFIG: dict[str, str] = {
    "kdf-remote:kdf_version": "2.1.0-beta",
    "kdf-remote:kdf_url": "https://github.com/KomodoPlatform/komodo-defi-framework/releases/download/v2.1.0-beta/mm2-35e923949-Linux-Release.zip",
    "kdf-remote:kdf_sha256": "8993a0d31ef7a3554089be77b0c587bae3e7a1aa075bd1ca9ae6db6b96ae0c31",
    "kdf-remote:allowed_ips": '["203.0.113.7/32", "2001:db8::/64"]',
}


def config_for(provider: str, **extra: str) -> dict[str, str]:
    """A minimal valid configuration for ``provider`` plus ``extra`` kdf-remote keys."""
    config = dict(BASE_CONFIG)
    config["kdf-remote:provider"] = provider
    if provider == "aws":
        config["kdf-remote:region"] = "us-east-1"
    elif provider == "do":
        config["kdf-remote:region"] = "fra1"
    else:
        config["kdf-remote:custom_host"] = '{"host": "192.0.2.10", "user": "admin"}'
    for key, value in extra.items():
        config[f"kdf-remote:{key}"] = value
    return config
