"""Human output: rich tables and coloured states (imported only for human output)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from kdf_remote.client.models import HealthSample, InstanceStatus, Limits, Worker

__all__ = [
    "health_table",
    "human_bytes",
    "human_duration",
    "instances_table",
    "state_text",
    "workers_table",
]

_STATE_STYLE = {
    "running": "bold green",
    "starting": "yellow",
    "stopping": "yellow",
    "updating": "cyan",
    "backoff": "bold magenta",
    "failed": "bold red",
    "stopped": "dim",
}


def state_text(state: str) -> Text:
    """A state word in its colour."""
    return Text(state, style=_STATE_STYLE.get(state, ""))


def human_bytes(value: int | None) -> str:
    """1536 → '1.5 KiB'; None → '-'."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def human_duration(seconds: float | None) -> str:
    """3725 → '1h 2m'; None → '-'."""
    if seconds is None:
        return "-"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _last_exit(status: InstanceStatus) -> str:
    last = status.last_exit
    if last is None:
        return "-"
    if last.signal is not None:
        return f"signal {last.signal}"
    return f"exit {last.code}" if last.code is not None else _dash(last.reason)


def instances_table(statuses: Sequence[InstanceStatus], *, title: str | None = None) -> Table:
    """One row per instance."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in (
        "NAME",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
        "KDF",
        "RPC",
        "CPU",
        "RSS",
        "LIMITS",
    ):
        table.add_column(
            column,
            justify="right" if column in ("PID", "RESTARTS", "RPC", "CPU", "RSS") else "left",
        )
    for status in statuses:
        table.add_row(
            status.name,
            state_text(status.state),
            _dash(status.pid),
            human_duration(status.uptime_s),
            str(status.restarts),
            _last_exit(status),
            _dash(status.kdf_version),
            _dash(status.rpc_port),
            "-" if status.cpu_percent is None else f"{status.cpu_percent:.1f}%",
            human_bytes(status.rss_bytes),
            _limits(status.limits),
        )
    return table


def _limits(limits: Limits | None) -> str:
    if limits is None or (limits.memory_bytes is None and limits.cpu is None):
        return "-"
    memory = human_bytes(limits.memory_bytes) if limits.memory_bytes is not None else "-"
    cpu = f"{limits.cpu:g} cpu" if limits.cpu is not None else "- cpu"
    return f"{memory} / {cpu}"


def health_table(sample: HealthSample) -> Table:
    """A two-column view of one health sample."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    healthy = (
        Text("healthy", style="bold green")
        if sample.healthy
        else Text("unhealthy", style="bold red")
    )
    table.add_row("instance", sample.name)
    table.add_row("state", state_text(sample.state))
    table.add_row("health", healthy)
    rpc = "answers" if sample.rpc_ok else "does not answer"
    if sample.rpc_latency_ms is not None:
        rpc += f" ({sample.rpc_latency_ms:.1f} ms)"
    table.add_row("rpc", rpc)
    table.add_row("kdf", _dash(sample.kdf_version))
    table.add_row("pid", _dash(sample.pid))
    table.add_row("uptime", human_duration(sample.uptime_s))
    table.add_row("restarts", str(sample.restarts))
    table.add_row("cpu", "-" if sample.cpu_percent is None else f"{sample.cpu_percent:.1f}%")
    table.add_row("rss", human_bytes(sample.rss_bytes))
    table.add_row("open fds", _dash(sample.open_fds))
    return table


def workers_table(workers: Sequence[Worker]) -> Table:
    """One row per worker."""
    table = Table(header_style="bold")
    for column in ("NAME", "STATE", "PID", "RPC", "UPTIME", "RESTARTS", "CPU", "RSS", "LIMITS"):
        table.add_column(column)
    for worker in workers:
        table.add_row(
            worker.name,
            state_text(worker.state),
            _dash(worker.pid),
            _dash(worker.rpc_port),
            human_duration(worker.uptime_s),
            str(worker.restarts),
            "-" if worker.cpu_percent is None else f"{worker.cpu_percent:.1f}%",
            human_bytes(worker.rss_bytes),
            _limits(worker.limits),
        )
    return table
