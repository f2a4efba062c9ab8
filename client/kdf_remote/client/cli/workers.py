"""Worker commands: list, add, remove (admin routes of the daemon)."""

from __future__ import annotations

from pathlib import Path

from kdf_remote.client.cli._common import (
    DEFAULT,
    EXIT_OK,
    Options,
    console,
    escape,
    print_json,
    run,
)
from kdf_remote.client.cli.instances import remote_controller

__all__ = ["add", "list_", "remove"]


def list_(*, options: Options = DEFAULT) -> int:
    """List workers and the capacity left for more."""

    def body() -> int:
        with remote_controller(options) as kdf:
            workers = kdf.workers()
            capacity = kdf.capacity()
        if options.json:
            print_json({"workers": workers, "capacity": capacity})
            return EXIT_OK
        from kdf_remote.client.cli.render import human_bytes, workers_table

        out = console()
        out.print(workers_table(workers))
        out.print(
            f"workers {capacity.workers}/{capacity.max_workers}, "
            f"free ports {len(capacity.free_ports)}, "
            f"memory left {human_bytes(capacity.memory_left)}, cpu left {capacity.cpu_left:g}, "
            f"limits by {capacity.mechanism}"
        )
        return EXIT_OK

    return run(options, body)


def add(
    name: str,
    /,
    *,
    config: Path | None = None,
    memory: str | None = None,
    cpu: float | None = None,
    start: bool = True,
    options: Options = DEFAULT,
) -> int:
    """Create a worker (its own RPC port, data directory and limits) and start it.

    Parameters
    ----------
    name
        Worker name.
    config
        JSON file with the worker's KDF startup config (default: a minimal offline config;
        the daemon generates the rpc_password).
    memory
        Memory limit, e.g. `512M` (default: the daemon's per-worker limit).
    cpu
        CPU limit in cores (default: the daemon's per-worker limit).
    start
        Start it right away.
    """

    def body() -> int:
        from kdf_remote.client._core import DEFAULT_STARTUP_CONFIG
        from kdf_remote.client.cli.instances import read_config
        from kdf_remote.client.models import WorkerRequest

        startup = read_config(config)
        if startup is None and start:
            startup = dict(DEFAULT_STARTUP_CONFIG)
        request = WorkerRequest(name=name, config=startup, memory=memory, cpu=cpu, start=start)
        with remote_controller(options) as kdf:
            worker = kdf.add_worker(request)
        if options.json:
            print_json(worker)
        else:
            console().print(
                f"worker [bold]{escape(worker.name)}[/] created "
                f"(rpc port {worker.rpc_port}, state {worker.state})"
            )
        return EXIT_OK

    return run(options, body)


def remove(name: str, /, *, purge: bool = False, options: Options = DEFAULT) -> int:
    """Stop and remove a worker (its data is kept unless --purge).

    Parameters
    ----------
    name
        Worker name.
    purge
        Also delete the worker's data directory and files.
    """

    def body() -> int:
        with remote_controller(options) as kdf:
            removed = kdf.remove_worker(name, purge=purge)
        if options.json:
            print_json(removed)
        else:
            kept = "data deleted" if removed.purged else f"data kept in {removed.data_dir}"
            console().print(f"worker [bold]{escape(name)}[/] removed ({escape(kept)})")
        return EXIT_OK

    return run(options, body)
