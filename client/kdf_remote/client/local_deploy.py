"""`kdf-remote deploy --provider local`: a kdf-remote daemon on this machine, no cloud account.

What deploy creates, all under ``$XDG_DATA_HOME/kdf-remote/local`` (0700):

- ``tls/``: a CA and a server certificate for 127.0.0.1 (``kdf-remote-daemon tls init``);
- ``daemon.yaml``: the daemon config (design.md schema), bound to 127.0.0.1 on a free port,
  ``kdf.binary_path`` the chosen KDF, free worker ports, instances stopped with the daemon;
- ``daemon/``: the daemon's state (API key store, JWT key, audit log, run dirs);
- ``kdf-data/``: KDF's data directory (kept by ``destroy`` unless ``purge``);
- ``daemon.log`` and ``deployment.json`` (the daemon's pid and start time);

plus an admin API key (``kdf-remote-daemon keys add --json``) stored only in the ``local``
profile, which points at the daemon with the CA pinned. The daemon runs detached in its own
session and deploy returns once ``GET /v1/health`` answers over TLS.

The KDF binary is ``kdf_binary`` if given, else ``kdf`` on PATH, else a verified download of a
pinned release (``release``: version, url, sha256), else ``kdf-sim``, which the result says.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from kdf_remote.client import errors
from kdf_remote.client.profiles import (
    Profile,
    data_dir,
    delete_profile,
    list_profiles,
    save_profile,
    set_current_profile,
)

__all__ = [
    "DeployResult",
    "DestroyResult",
    "LocalDeployOptions",
    "ReleasePin",
    "deploy_local",
    "destroy_local",
    "local_state_dir",
]

DAEMON_SCRIPT = "kdf-remote-daemon"
SIM_SCRIPT = "kdf-sim"
KDF_DATA = "kdf-data"
WORKER_PORTS = 4


class ReleasePin(msgspec.Struct, frozen=True, kw_only=True):
    """A KDF release to download and verify (upstream publishes no checksums: pin your own)."""

    version: str
    url: str
    sha256: str
    allowed_origins: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LocalDeployOptions:
    """Inputs of a local deployment (all optional)."""

    profile_name: str = "local"
    kdf_binary: Path | None = None
    release: ReleasePin | None = None
    port: int | None = None
    """Daemon port; a free one when None."""
    ready_timeout: float = 60.0
    state_dir: Path | None = None
    """Default: ``$XDG_DATA_HOME/kdf-remote/local``."""


class DeploymentRecord(msgspec.Struct, kw_only=True):
    """``deployment.json``: what destroy needs to find and stop the daemon."""

    profile: str
    url: str
    pid: int
    start_ticks: int | None
    kdf_binary: str
    simulated: bool
    config: str


class DeployResult(msgspec.Struct, kw_only=True):
    """What `deploy_local` did (the `--json` shape of `kdf-remote deploy --provider local`)."""

    provider: str = "local"
    profile: str
    url: str
    pid: int
    kdf_binary: str
    kdf_source: str
    """``argument``, ``path``, ``release`` or ``simulator``."""
    simulated: bool
    state_dir: str
    config: str
    log: str


class DestroyResult(msgspec.Struct, kw_only=True):
    """What `destroy_local` did."""

    provider: str = "local"
    stopped_pid: int | None
    removed: list[str] = msgspec.field(default_factory=list)
    kept: list[str] = msgspec.field(default_factory=list)


def local_state_dir() -> Path:
    """``$XDG_DATA_HOME/kdf-remote/local``."""
    return data_dir() / "local"


# --- helpers ------------------------------------------------------------------------------------


def _script(name: str) -> str | None:
    """A console script of this installation first (the venv's), then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_range(count: int, avoid: set[int]) -> tuple[int, int]:
    """`count` consecutive free ports (not in `avoid`), starting from a kernel-chosen one."""
    for _ in range(50):
        base = _free_port()
        ports = range(base, base + count)
        if (
            base + count < 65536
            and not avoid.intersection(ports)
            and all(_port_free(p) for p in ports)
        ):
            return base, base + count - 1
    raise errors.KdfRemoteError(f"could not find {count} consecutive free ports on 127.0.0.1")


def _start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks (``/proc/<pid>/stat`` field 22): pid reuse guard."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _same_process(pid: int, ticks: int | None) -> bool:
    current = _start_ticks(pid)
    return current is not None and (ticks is None or current == ticks)


def _run_tool(argv: Sequence[str], what: str) -> bytes:
    """Run a daemon subcommand; its stdout (may hold a secret: never logged or echoed)."""
    done = subprocess.run(
        list(argv), capture_output=True, check=False, timeout=120, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise errors.KdfRemoteError(
            f"{what} failed: {reason[-1] if reason else f'exit {done.returncode}'}"
        )
    return done.stdout


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)


# --- choosing KDF -------------------------------------------------------------------------------


def choose_kdf(options: LocalDeployOptions, state: Path) -> tuple[Path, str]:
    """The KDF binary and where it came from (see the module docstring for the order)."""
    if options.kdf_binary is not None:
        binary = options.kdf_binary.expanduser().resolve()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise errors.ConfigError(
                f"--kdf-binary {binary}: not an executable file", field="kdf_binary"
            )
        return binary, "argument"
    found = shutil.which("kdf")
    if found:
        return Path(found).resolve(), "path"
    if options.release is not None:
        return _download_release(options.release, state), "release"
    sim = _script(SIM_SCRIPT)
    if sim is None:
        raise errors.ConfigError(
            "no KDF binary: pass --kdf-binary PATH, put `kdf` on PATH, or give a pinned release "
            "(--kdf-release-url and --kdf-release-sha256); kdf-sim is not installed either",
            field="kdf_binary",
        )
    return Path(sim), "simulator"


def _download_release(pin: ReleasePin, state: Path) -> Path:
    """Download, verify (sha256 of the zip) and unpack a pinned release into ``state/kdf-bin``."""
    import asyncio
    from urllib.parse import urlsplit

    try:
        from kdf_remote.kdf.release import DownloadPolicy, ReleaseError, ReleaseSpec, ReleaseStore
    except ImportError as exc:
        raise errors.ConfigError(
            "downloading a KDF release needs the [local] extra: pip install 'kdf-remote[local]'"
        ) from exc
    parts = urlsplit(pin.url)
    origins = pin.allowed_origins or (f"{parts.scheme}://{parts.netloc}",)
    store = ReleaseStore(state / "kdf-bin")
    try:
        spec = ReleaseSpec(version=pin.version, url=pin.url, sha256=pin.sha256)
        asyncio.run(store.install(spec, DownloadPolicy(allowed_origins=origins)))
        store.switch(pin.version)
    except ReleaseError as exc:
        raise errors.KdfRemoteError(f"KDF release {pin.version}: {exc}") from None
    return store.current_binary


# --- the daemon's files ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Layout:
    root: Path
    tls: Path = field(init=False)
    config: Path = field(init=False)
    daemon_state: Path = field(init=False)
    kdf_data: Path = field(init=False)
    log: Path = field(init=False)
    record: Path = field(init=False)

    def __post_init__(self) -> None:
        for name, value in (
            ("tls", self.root / "tls"),
            ("config", self.root / "daemon.yaml"),
            ("daemon_state", self.root / "daemon"),
            ("kdf_data", self.root / KDF_DATA),
            ("log", self.root / "daemon.log"),
            ("record", self.root / "deployment.json"),
        ):
            object.__setattr__(self, name, value)


def render_daemon_config(
    layout: _Layout, *, port: int, rpc_port: int, worker_ports: tuple[int, int], kdf_binary: Path
) -> str:
    """The daemon YAML of a local deployment (design.md schema)."""
    import yaml

    document = {
        "daemon": {
            "host": "127.0.0.1",
            "port": port,
            "state_dir": str(layout.daemon_state),
            "log_level": "info",
            # destroy stops the daemon with SIGTERM: take KDF down with it.
            "stop_instances_on_exit": True,
        },
        "worker_support": {
            "enabled": True,
            "max_workers": worker_ports[1] - worker_ports[0] + 1,
            "worker_ports": f"{worker_ports[0]}-{worker_ports[1]}",
        },
        "kdf": {
            "binary_path": str(kdf_binary),
            "data_dir": str(layout.kdf_data),
            "rpc_port": rpc_port,
        },
        "security": {
            "api_keys": [],
            "allowed_ips": ["127.0.0.1/32", "::1/128"],
            "ssl": {
                "cert_path": str(layout.tls / "server.pem"),
                "key_path": str(layout.tls / "server.key"),
            },
            # One user on loopback: the remote-facing default (600/min) would throttle
            # `status --all` across many profiles.
            "rate_limit": {"requests_per_minute": 60000},
        },
    }
    return yaml.safe_dump(document, sort_keys=False)


def daemon_argv(config: Path) -> list[str]:
    """How to run the daemon on a config file."""
    script = _script(DAEMON_SCRIPT)
    if script is None:
        raise errors.ConfigError(
            "kdf-remote-daemon is not installed: pip install 'kdf-remote[daemon]'", field="provider"
        )
    return [script, "--config", str(config)]


def _wait_healthy(url: str, ca_pem: str, pid: int, log: Path, timeout: float) -> None:
    """Poll `GET /v1/health` until it answers; fail early if the daemon exits."""
    from kdf_remote.client._core import RetryPolicy
    from kdf_remote.client._http import ClientSettings
    from kdf_remote.client._sync import RemoteKdfController

    settings = ClientSettings(url, ca_pem=ca_pem, timeout=5.0, retry=RetryPolicy.none())
    deadline = time.monotonic() + timeout
    with RemoteKdfController(settings) as probe:
        while True:
            try:
                probe.daemon_health()
                return
            except errors.TransportError as exc:
                last = str(exc)
            if not _alive(pid):
                raise errors.KdfRemoteError(f"the daemon exited during start-up: {_log_tail(log)}")
            if time.monotonic() >= deadline:
                raise errors.DaemonTimeoutError(
                    f"the daemon did not answer within {timeout:.0f} s: {last}"
                )
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        waited = 0
    if waited == pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _start_ticks(pid) is not None and not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].startswith("Z")


def _log_tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no daemon log)"
    return " | ".join(text[-lines:]) or "(empty daemon log)"


# --- deploy and destroy -------------------------------------------------------------------------


def read_record(state: Path | None = None) -> DeploymentRecord | None:
    """The current local deployment's record, if there is one."""
    path = (state or local_state_dir()) / "deployment.json"
    try:
        return msgspec.json.decode(path.read_bytes(), type=DeploymentRecord)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def deploy_local(
    options: LocalDeployOptions, *, on_step: Callable[[str], None] = lambda _step: None
) -> DeployResult:
    """Install and start a daemon on 127.0.0.1 and create the profile pointing at it."""
    layout = _Layout(root=options.state_dir or local_state_dir())
    existing = read_record(layout.root)
    if (
        existing is not None
        and _alive(existing.pid)
        and _same_process(existing.pid, existing.start_ticks)
    ):
        raise errors.KdfRemoteError(
            f"a local deployment is already running (pid {existing.pid}, {existing.url}); "
            "run `kdf-remote destroy --provider local` first"
        )
    layout.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    layout.root.chmod(0o700)

    on_step("choosing the KDF binary")
    binary, source = choose_kdf(options, layout.root)

    on_step("generating the CA and the server certificate")
    if layout.tls.exists():
        shutil.rmtree(layout.tls)
    _run_tool(
        [
            *_daemon_tool(),
            "tls",
            "init",
            "--dir",
            str(layout.tls),
            "--san",
            "127.0.0.1",
            "--san",
            "localhost",
            "--json",
        ],
        "kdf-remote-daemon tls init",
    )
    ca_pem = (layout.tls / "ca.pem").read_text(encoding="ascii")

    port = options.port or _free_port()
    rpc_port = _free_port()
    workers = _free_range(WORKER_PORTS, {port, rpc_port})
    layout.daemon_state.mkdir(exist_ok=True, mode=0o700)
    layout.kdf_data.mkdir(exist_ok=True, mode=0o700)
    _write_private(
        layout.config,
        render_daemon_config(
            layout, port=port, rpc_port=rpc_port, worker_ports=workers, kdf_binary=binary
        ).encode(),
    )

    on_step("creating the admin API key")
    keys_file = layout.daemon_state / "api_keys.json"
    keys_file.unlink(missing_ok=True)
    raw = _run_tool(
        [
            *_daemon_tool(),
            "keys",
            "add",
            "--config",
            str(layout.config),
            "--name",
            "local-admin",
            "--role",
            "admin",
            "--json",
        ],
        "kdf-remote-daemon keys add",
    )
    try:
        api_key = msgspec.json.decode(raw, type=dict[str, str])["key"]
    except (msgspec.DecodeError, msgspec.ValidationError, KeyError):
        raise errors.KdfRemoteError("kdf-remote-daemon keys add: unexpected output") from None

    on_step("starting the daemon")
    url = f"https://127.0.0.1:{port}"
    with layout.log.open("ab") as log:
        layout.log.chmod(0o600)
        process = subprocess.Popen(
            daemon_argv(layout.config),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=layout.root,
            start_new_session=True,
            close_fds=True,
        )
    record = DeploymentRecord(
        profile=options.profile_name,
        url=url,
        pid=process.pid,
        start_ticks=_start_ticks(process.pid),
        kdf_binary=str(binary),
        simulated=source == "simulator",
        config=str(layout.config),
    )
    _write_private(layout.record, msgspec.json.encode(record))

    on_step("waiting for the daemon to answer")
    try:
        _wait_healthy(url, ca_pem, process.pid, layout.log, options.ready_timeout)
    except errors.KdfRemoteError:
        _stop_pid(process.pid, record.start_ticks, timeout=10.0)
        raise

    profile = Profile(name=options.profile_name, url=url, api_key=api_key, provider="local")
    save_profile(profile, ca_pem=ca_pem)
    set_current_profile(options.profile_name)
    return DeployResult(
        profile=options.profile_name,
        url=url,
        pid=process.pid,
        kdf_binary=str(binary),
        kdf_source=source,
        simulated=source == "simulator",
        state_dir=str(layout.root),
        config=str(layout.config),
        log=str(layout.log),
    )


def _daemon_tool() -> list[str]:
    script = _script(DAEMON_SCRIPT)
    if script is None:
        raise errors.ConfigError(
            "kdf-remote-daemon is not installed: pip install 'kdf-remote[daemon]'", field="provider"
        )
    return [script]


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal the process group `pid` leads, or the process alone when it leads none."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _stop_pid(pid: int, ticks: int | None, *, timeout: float) -> bool:
    """SIGTERM the daemon's process group, then SIGKILL; True when it is gone."""
    if not _same_process(pid, ticks):
        return True
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _kdf_pids(record: DeploymentRecord) -> list[tuple[int, int | None]]:
    """Pids (and start times) of the KDF processes the daemon runs, asked before stopping it."""
    from kdf_remote.client._core import RetryPolicy
    from kdf_remote.client._sync import RemoteKdfController
    from kdf_remote.client.profiles import load_profile

    if not _alive(record.pid) or record.profile not in list_profiles():
        return []
    try:
        profile = load_profile(record.profile)
        with RemoteKdfController.from_profile(
            profile, retry=RetryPolicy.none(), token_exchange=False
        ) as kdf:
            statuses = kdf.instances()
    except errors.KdfRemoteError:
        return []
    return [(s.pid, _start_ticks(s.pid)) for s in statuses if s.pid is not None]


def destroy_local(
    *,
    purge: bool = False,
    state_dir: Path | None = None,
    stop_timeout: float = 60.0,
    on_step: Callable[[str], None] = lambda _step: None,
) -> DestroyResult:
    """Stop the local daemon (and KDF with it), remove what deploy created; keep KDF's data
    directory unless `purge`."""
    root = state_dir or local_state_dir()
    record = read_record(root)
    if record is None and not root.exists():
        raise errors.KdfRemoteError("no local deployment (nothing under " + str(root) + ")")
    stopped: int | None = None
    if record is not None:
        on_step("stopping the daemon and KDF")
        kdf_pids = _kdf_pids(record)
        if not _stop_pid(record.pid, record.start_ticks, timeout=stop_timeout):
            raise errors.KdfRemoteError(f"the daemon (pid {record.pid}) did not stop")
        stopped = record.pid
        # The daemon stops its instances on exit; a KDF that outlived it (daemon killed) is
        # still ours to end, recognised by pid and start time.
        for pid, ticks in kdf_pids:
            _stop_pid(pid, ticks, timeout=15.0)
    on_step("removing files")
    result = DestroyResult(stopped_pid=stopped)
    for child in sorted(root.iterdir()) if root.exists() else []:
        if child.name == KDF_DATA and not purge:
            result.kept.append(str(child))
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
        result.removed.append(str(child))
    if purge or not any(root.iterdir()):
        with contextlib.suppress(OSError):
            root.rmdir()
    profile = record.profile if record is not None else "local"
    if profile in list_profiles():
        delete_profile(profile)
        result.removed.append(f"profile {profile}")
    return result
