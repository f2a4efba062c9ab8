"""Fake KDF release zips and a loopback HTTP server that serves them.

A "release" is a zip holding one executable named ``kdf`` (or the legacy ``mm2``): a Python script
that execs kdf-sim with ``KDF_SIM_VERSION`` set, so an installed release really runs and reports
its version like KDF. Broken variants stand in for bad releases:

* ``exits_at_start``: answers ``--version`` but exits 1 on a real start (a startup error);
* ``never_ready``: logs its banner but never binds the RPC (``KDF_SIM_HANG=1``);
* :func:`corrupt_zip`, :func:`traversal_zip`, :func:`symlink_zip`, :func:`two_binaries_zip`.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import stat
import sys
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

Mode = Literal["ok", "exits_at_start", "never_ready"]

_SCRIPT = """#!{python}
import os
import sys

os.environ["KDF_SIM_VERSION"] = {version!r}
mode = {mode!r}
if mode == "exits_at_start" and "--version" not in sys.argv[1:]:
    sys.stdout.write("fake release: startup error\\n")
    sys.exit(1)
if mode == "never_ready":
    os.environ["KDF_SIM_HANG"] = "1"
os.execv({python!r}, [{python!r}, "-m", "kdf_remote.sim", *sys.argv[1:]])
"""


def release_script(version: str, mode: Mode = "ok") -> bytes:
    """The executable a fake release holds."""
    return _SCRIPT.format(python=sys.executable, version=version, mode=mode).encode()


def _zip(members: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            zf.writestr(info, data)
    return buffer.getvalue()


def _member(name: str, mode: int = 0o755, kind: int = stat.S_IFREG) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2025, 7, 28, 0, 0, 0))
    info.external_attr = (kind | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def release_zip(version: str, *, binary_name: str = "kdf", mode: Mode = "ok") -> bytes:
    """A release zip as KDF CI builds it (``zip -j``: the bare binary at the root)."""
    return _zip([(_member(binary_name), release_script(version, mode))])


def corrupt_zip(version: str = "9.9.9-corrupt") -> bytes:
    """A release zip with bytes flipped inside the compressed binary: its CRC no longer holds."""
    data = bytearray(release_zip(version))
    start = 30 + len("kdf")  # local header, then the file name, then the compressed data
    for offset in range(start + 10, start + 40):
        data[offset] ^= 0xFF
    return bytes(data)


def traversal_zip() -> bytes:
    """A zip whose only member climbs out of the extraction directory."""
    return _zip([(_member("../kdf"), release_script("9.9.9-evil"))])


def symlink_zip() -> bytes:
    """A zip whose ``kdf`` is a symlink to a host file."""
    return _zip([(_member("kdf", 0o777, stat.S_IFLNK), b"/etc/passwd")])


def two_binaries_zip() -> bytes:
    """A zip with a second file beside the binary."""
    return _zip(
        [(_member("kdf"), release_script("9.9.9-two")), (_member("extra.sh"), b"#!/bin/sh\n")]
    )


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class Route:
    """What the server answers on one path."""

    body: bytes = b""
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    send_length: bool = True
    """False: no Content-Length, the body ends when the connection closes."""


class ReleaseServer:
    """A threaded HTTP server on 127.0.0.1 with a free port, serving :class:`Route` s."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits.append(self.path)
                route = server.routes.get(self.path, Route(b"not found", 404))
                if not route.send_length:
                    # HTTP/1.0 framing: the body runs until the connection closes.
                    self.protocol_version = "HTTP/1.0"
                self.send_response(route.status)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                if route.send_length:
                    self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                try:
                    self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on purpose (size cap)
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this server."""
        return self.origin + path

    def add(
        self,
        path: str,
        body: bytes,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        send_length: bool = True,
    ) -> str:
        """Serve ``body`` on ``path``; returns its URL."""
        self.routes[path] = Route(body, status, dict(headers or {}), send_length)
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer ``path`` with a redirect to ``location``; returns the URL of ``path``."""
        self.routes[path] = Route(b"", status, {"Location": location})
        return self.url(path)

    def __enter__(self) -> ReleaseServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
