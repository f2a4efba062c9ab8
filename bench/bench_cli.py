"""Wall time of the kdf-remote CLI beside its floors and anchors, in one run.

    .venv/bin/python bench/bench_cli.py [--runs 20] [--profiles 100]

Starts (and stops) its own daemon over TLS on 127.0.0.1 with kdf-sim as KDF, and a supervisord
with a temporary config. Commands are interleaved (A B A B ...) and reported as medians with
min-max in milliseconds:

- `kdf-remote --help`                               target <= 150 ms
- `kdf-remote status --json` vs `curl` of the same call (floor) vs `supervisorctl status`
                                                    target: no slower than supervisorctl
- `kdf-remote rpc version` vs `curl` POST of the same call
- `kdf-remote status --all --json` over N profiles  target <= 1.5 s for 100
- `python -c pass` and `python -c "import cyclopts, httpx, httpcore, msgspec, yaml"` (httpx's own
  CLI blocked as `kdf-remote` does): what any CLI built on the mandated libraries pays before it
  does anything, to compare with `status --json` and supervisorctl
Console scripts are invoked by their path in this venv (never through a shim).
"""

from __future__ import annotations

import argparse
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

# bench/ is the script's own directory (first on sys.path), but not on mypy's path.
from _nginx import free_port  # type: ignore[import-not-found]
from kdf_remote.daemon.security.certs import init_tls
from kdf_remote.daemon.security.tokens import create_jwt_key_file

BIN = Path(sys.executable).parent
API_KEY = "kdfr_" + "b" * 43


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and server certificate for 127.0.0.1 (the daemon's own `tls init`)."""
    files = init_tls(directory, ["127.0.0.1", "localhost"], days=1)
    return Path(files.server_cert), Path(files.server_key), Path(files.ca_cert)


def start_daemon(root: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    cert, key, ca = make_tls(root / "tls")
    port, workers = free_port(), free_port()
    config = {
        "daemon": {
            "host": "127.0.0.1",
            "port": port,
            "state_dir": str(root / "state"),
            "stop_instances_on_exit": True,
        },
        "worker_support": {
            "enabled": False,
            "worker_ports": f"{workers}-{workers}",
            "max_workers": 1,
        },
        "kdf": {
            "binary_path": str(BIN / "kdf-sim"),
            "data_dir": str(root / "kdf"),
            "rpc_port": free_port(),
        },
        "security": {
            "api_keys": [API_KEY],
            "allowed_ips": ["127.0.0.1/32"],
            "ssl": {"cert_path": str(cert), "key_path": str(key)},
            "rate_limit": {"requests_per_minute": 1000000, "auth_per_minute": 1000000},
        },
    }
    path = root / "daemon.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    # The daemon refuses to start without its token-signing key (made at install time).
    create_jwt_key_file(root / "state" / "jwt.key")
    log = (root / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "kdf-remote-daemon"), "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if (
                httpx.get(
                    f"https://127.0.0.1:{port}/v1/health", verify=context, timeout=2
                ).status_code
                == 200
            ):
                return proc, port, ca
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("daemon did not start: " + (root / "daemon.log").read_text()[-2000:])


def start_supervisord(root: Path) -> tuple[subprocess.Popen[bytes], Path]:
    sock = root / "supervisor.sock"
    conf = root / "supervisord.conf"
    conf.write_text(
        f"[unix_http_server]\nfile={sock}\n[supervisord]\nnodaemon=true\nlogfile={root}/supervisord.log\n"
        f"pidfile={root}/supervisord.pid\n[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[supervisorctl]\nserverurl=unix://{sock}\n[program:kdf]\ncommand=sleep 100000\n"
    )
    proc = subprocess.Popen(
        [str(BIN / "supervisord"), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(conf), "status"],
            capture_output=True,
            check=False,
        ).stdout.count(b"RUNNING"):
            return proc, conf
        time.sleep(0.2)
    raise SystemExit("supervisord did not start")


def timed(argv: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, env=env, check=False)
    elapsed = (time.perf_counter() - began) * 1000
    if done.returncode not in (0,):
        raise SystemExit(
            f"{argv} failed ({done.returncode}): {done.stdout[-300:]!r} {done.stderr[-300:]!r}"
        )
    return elapsed


def report(name: str, samples: list[float]) -> float:
    median = statistics.median(samples)
    print(f"{name:48s} {median:8.1f} ms  [{min(samples):.1f}-{max(samples):.1f}]")
    return median


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--profiles", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kdf-remote-bench-") as tmp:
        root = Path(tmp)
        env = {
            **os.environ,
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_DATA_HOME": str(root / "data"),
        }
        env.pop("KDF_REMOTE_PROFILE", None)
        # Measure the CLI as an installed one runs: with cached bytecode. pip compiled the
        # anchors' (supervisor's) bytecode at install time; an editable checkout under
        # PYTHONDONTWRITEBYTECODE would recompile every module of ours on every run.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        daemon, port, ca = start_daemon(root / "daemon")
        supervisord, conf = start_supervisord(root)
        try:
            url = f"https://127.0.0.1:{port}"
            kdf = str(BIN / "kdf-remote")
            key_file = root / "key"
            key_file.write_text(API_KEY)
            subprocess.run(
                [
                    kdf,
                    "profile",
                    "add",
                    "bench",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--key-file",
                    str(key_file),
                    "--ca",
                    str(ca),
                ],
                env=env,
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [kdf, "start", "main", "--json"], env=env, check=True, capture_output=True
            )
            auth = ["-H", f"Authorization: Bearer {API_KEY}"]
            python = sys.executable
            commands = {
                "python -c pass": [python, "-c", "pass"],
                "import cyclopts+httpx+httpcore+msgspec+yaml": [
                    python,
                    "-c",
                    "import sys; sys.modules['httpx._main'] = None\n"
                    "import cyclopts, httpx, httpcore, msgspec, yaml",
                ],
                "kdf-remote --help": [kdf, "--help"],
                "kdf-remote status --json": [kdf, "status", "--json"],
                "curl GET /v1/instances (floor)": [
                    "curl",
                    "-sf",
                    "--cacert",
                    str(ca),
                    *auth,
                    f"{url}/v1/instances",
                ],
                "supervisorctl status (1 program)": [
                    str(BIN / "supervisorctl"),
                    "-c",
                    str(conf),
                    "status",
                ],
                "kdf-remote rpc version": [kdf, "rpc", "version"],
                "curl POST /v1/instances/main/rpc (floor)": [
                    "curl",
                    "-sf",
                    "--cacert",
                    str(ca),
                    *auth,
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    '{"method":"version"}',
                    f"{url}/v1/instances/main/rpc",
                ],
            }
            samples: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(args.runs):
                for name, argv in commands.items():
                    samples[name].append(timed(argv, env))
            print(f"runs: {args.runs} each, interleaved; python {sys.version.split()[0]}")
            medians = {name: report(name, values) for name, values in samples.items()}
            for index in range(args.profiles):
                subprocess.run(
                    [
                        kdf,
                        "profile",
                        "add",
                        f"p{index:03d}",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--key-file",
                        str(key_file),
                        "--ca",
                        str(ca),
                    ],
                    env=env,
                    check=True,
                    capture_output=True,
                )
            all_samples = [
                timed([kdf, "status", "--all", "--json"], env)
                for _ in range(max(3, args.runs // 4))
            ]
            medians["all"] = report(
                f"kdf-remote status --all --json ({args.profiles + 1} profiles)", all_samples
            )
            ratio = (
                medians["kdf-remote status --json"] / medians["supervisorctl status (1 program)"]
            )
            print(f"status --json / supervisorctl status: {ratio:.2f}x (target <= 1.0)")
            floor = medians["import cyclopts+httpx+httpcore+msgspec+yaml"]
            print(
                f"  of which the mandated libraries' import alone: {floor:.0f} ms "
                f"({floor / medians['supervisorctl status (1 program)']:.2f}x supervisorctl); "
                f"kdf-remote's own share: {medians['kdf-remote status --json'] - floor:.0f} ms"
            )
            print(f"--help: {medians['kdf-remote --help']:.0f} ms (target <= 150)")
            print(f"status --all: {medians['all']:.0f} ms (target <= 1500)")
            subprocess.run([kdf, "stop", "main"], env=env, check=False, capture_output=True)
        finally:
            supervisord.send_signal(signal.SIGTERM)
            supervisord.wait(timeout=30)
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=60)


if __name__ == "__main__":
    main()
