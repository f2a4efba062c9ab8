"""wrk with a Lua script that POSTs one JSON body and prints a parseable summary line.

Shared by the proxy and kdf_compat benchmarks (wrk from Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA = """\
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
{extra}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %.6f %.1f %.1f %d %d\\n", summary.requests,
    summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass
class WrkResult:
    """One wrk run."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(url: str, connections: int, duration: float, script: Path) -> WrkResult:
    """Run wrk against ``url`` and parse the Lua summary line."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT"))
    _, requests, seconds, p50, p99, socket_errors, status_errors = line.split()
    return WrkResult(
        requests_per_s=int(requests) / float(seconds),
        p50_ms=float(p50) / 1000,
        p99_ms=float(p99) / 1000,
        errors=int(socket_errors) + int(status_errors),
    )


def lua(root: Path, name: str, body: str, headers: dict[str, str]) -> Path:
    """A wrk script posting ``body`` with ``headers``."""
    extra = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    path = root / f"{name}.lua"
    path.write_text(LUA.format(body=body, extra=extra))
    return path


def median(results: list[WrkResult]) -> WrkResult:
    """Field-wise median of several runs (errors are summed)."""
    return WrkResult(
        requests_per_s=statistics.median(r.requests_per_s for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        errors=sum(r.errors for r in results),
    )
