"""``kdf-sim``: the entry point. Resolves argv, config and environment exactly as ``kdf`` does.

Exit codes follow KDF (kdf-facts 3.3): 0 after ``stop`` or SIGINT, 1 for any start-up or config
error (logged first), 101 for a panic (bad RPC address, busy port), 2 for a usage error. A bad
``KDF_SIM_*`` variable (a test-harness mistake, not a KDF behaviour) also exits 2.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kdf_remote.sim.config import (
    PanicError,
    StartupError,
    check_rpc_password,
    decode_config,
    load_coins,
    load_config_json,
    p2p_precheck,
)
from kdf_remote.sim.failure_modes import FailureModeError, FailureModes, parse_failure_modes
from kdf_remote.sim.kdflog import KdfLog
from kdf_remote.sim.node import Node
from kdf_remote.sim.wallet import create_wallet_dirs, db_root, load_identity, random_peer_id

if TYPE_CHECKING:
    import ssl

__all__ = ["BUILD_DATETIME", "main", "prepare_node"]

BUILD_DATETIME = "2025-07-28T09:40:51+00:00"
USAGE_EXIT_CODE = 2
_HELP = """\
Komodo DeFi Framework daemon (kdf-sim: a simulator of it for tests)

Usage: kdf [CONFIG]

Arguments:
  [CONFIG]  JSON configuration (the text itself, not a path)

Options:
  -v, --version  Print version
  -h, --help     Print help

Environment variables:
  MM_CONF_PATH   path to the MM2.json configuration file
  MM_COINS_PATH  path to the coins file
  MM_LOG         path to the log file (must end in .log)
"""


@dataclass(frozen=True, slots=True)
class _Args:
    show_version: bool
    show_help: bool
    config_text: str | None


class _UsageError(Exception):
    pass


def _parse_args(argv: Sequence[str]) -> _Args:
    """clap's view of argv: one optional positional (the JSON text), ``-v``, ``-h``."""
    positional: list[str] = []
    show_version = show_help = False
    only_positional = False
    for arg in argv:
        if not only_positional and arg == "--":
            only_positional = True
        elif not only_positional and arg in ("-v", "--version"):
            show_version = True
        elif not only_positional and arg in ("-h", "--help"):
            show_help = True
        elif (
            not only_positional
            and arg.startswith("-")
            and len(arg) > 1
            and not arg.startswith("-{")
        ):
            raise _UsageError(f"error: unexpected argument '{arg}' found")
        else:
            positional.append(arg)
    if len(positional) > 1:
        raise _UsageError(f"error: unexpected argument '{positional[1]}' found")
    return _Args(show_version, show_help, positional[0] if positional else None)


def prepare_node(
    args_config: str | None, env: Mapping[str, str], cwd: Path, log: KdfLog, modes: FailureModes
) -> Node:
    """Everything KDF does before spawning the RPC; raises StartupError or PanicError as KDF."""
    conf = load_config_json(args_config, env, cwd)
    fields: dict[str, object] = conf if isinstance(conf, dict) else {}
    coins = load_coins(fields, env, cwd)
    check_rpc_password(fields)
    config = decode_config(fields, coins)
    log.silent_console = config.silent_console
    log.env(
        "INFO",
        "mm2_main::lp_native_dex:476",
        f"Version: {modes.version} DT {BUILD_DATETIME}",
    )
    home = Path(env.get("HOME") or Path.home())
    root = db_root(config, cwd, home)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        raise StartupError(f"{root} db dir is not writable") from None
    identity = load_identity(config, root)
    if identity is not None:
        create_wallet_dirs(root, identity)
    p2p_precheck(config, identity is not None)
    if config.p2p_disabled:
        log.env(
            "WARN",
            "mm2_main::lp_native_dex:512",
            "P2P is disabled. Features that require a P2P network (like swaps, peer health "
            "checks, etc.) will not work.",
        )
    return Node(
        config=config,
        version=modes.version,
        datetime=BUILD_DATETIME,
        log=log,
        db_root=root,
        identity=identity,
        peer_id=identity.peer_id() if identity is not None else random_peer_id(),
    )


def _tls_context(node: Node, env: Mapping[str, str], log: KdfLog) -> ssl.SSLContext | None:
    if not node.config.https:
        return None
    from kdf_remote.sim.tls import server_ssl_context

    return server_ssl_context(env, Path.cwd(), node.config.alt_names, log)


def _run(node: Node, modes: FailureModes, log: KdfLog, tls: ssl.SSLContext | None) -> int:
    import asyncio

    from kdf_remote.sim.runtime import RequestLog, run_node

    request_log = None
    if modes.request_log:
        try:
            request_log = RequestLog(modes.request_log)
        except OSError as err:
            sys.stderr.write(f"kdf-sim: KDF_SIM_REQUEST_LOG={modes.request_log!r}: {err}\n")
            return USAGE_EXIT_CODE

    factory: Callable[[], asyncio.AbstractEventLoop] | None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run_node(node, modes, log, tls=tls, request_log=request_log))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the simulator; never returns (the process exits with KDF's exit code)."""
    # Until the node's Ctrl-C handler is installed, SIGINT kills the process as it kills kdf.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    env = dict(os.environ)
    try:
        modes = parse_failure_modes(env)
    except FailureModeError as err:
        sys.stderr.write(f"kdf-sim: {err}\n")
        sys.exit(USAGE_EXIT_CODE)
    try:
        args = _parse_args(sys.argv[1:] if argv is None else argv)
    except _UsageError as err:
        sys.stderr.write(f"{err}\n\nUsage: kdf [CONFIG]\n\nFor more information, try '--help'.\n")
        sys.exit(USAGE_EXIT_CODE)
    if args.show_help:
        sys.stdout.write(_HELP)
        sys.exit(0)
    if args.show_version:
        sys.stdout.write(f"Komodo DeFi Framework: {modes.version}\n")
        sys.exit(0)
    log = KdfLog(mm_log=env.get("MM_LOG"), rust_log=env.get("RUST_LOG"))
    log.log("mm2:160", f"Komodo DeFi Framework {modes.version} DT {BUILD_DATETIME}")
    try:
        node = prepare_node(args.config_text, env, Path.cwd(), log, modes)
        tls = _tls_context(node, env, log)
    except StartupError as err:
        log.log("mm2:176", str(err))
        sys.exit(1)
    except PanicError as panic:
        from kdf_remote.sim.runtime import PANIC_EXIT_CODE, format_panic

        log.log("common:203", format_panic(panic))
        sys.exit(PANIC_EXIT_CODE)
    code = _run(node, modes, log, tls)
    # Every line was written unbuffered with os.write, so skipping the interpreter's teardown
    # loses nothing and keeps stop-to-exit within KDF's 50-250 ms.
    sys.stderr.flush()
    os._exit(code)
