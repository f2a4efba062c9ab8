"""Run Debian's nginx as a loopback reverse proxy for benchmarks (temporary prefix and config).

    with NginxProxy(upstream_port=7783) as nginx:
        ... POST http://127.0.0.1:{nginx.port}/ ...

One worker, keep-alive connections to the upstream (the anchor-figures.md setup), no logs.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

CONFIG = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream kdf {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://kdf;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_binary() -> str:
    """Path of nginx (Debian installs it in /usr/sbin, often not on PATH)."""
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(found).exists():
        raise SystemExit("nginx not found: apt-get install -y nginx")
    return found


class NginxProxy:
    """nginx reverse-proxying 127.0.0.1:<port> to 127.0.0.1:<upstream_port>."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> NginxProxy:
        config = self.prefix / "nginx.conf"
        config.write_text(
            CONFIG.format(prefix=self.prefix, upstream_port=self.upstream_port, port=self.port)
        )
        self.process = subprocess.Popen(
            [nginx_binary(), "-p", str(self.prefix), "-c", str(config), "-e", "stderr"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self.process.poll() is not None:
                raise SystemExit(f"nginx exited with {self.process.returncode}")
            time.sleep(0.02)
        raise SystemExit("nginx did not start listening")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)
