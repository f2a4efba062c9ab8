"""The boundary ``kdf-remote deploy`` / ``destroy`` cross to drive the Pulumi program.

Three functions, all through Pulumi's Automation API with the program run inline (so an installed
``kdf-remote[infra]`` needs no checkout of ``infra/``); the ``pulumi`` CLI must be on PATH, and
its login (Pulumi Cloud or a self-managed backend) decides where stack state lives:

* :func:`up` creates or updates a stack and returns its outputs (design.md "Stack outputs");
* :func:`destroy` removes every resource of a stack;
* :func:`outputs` reads the outputs of an existing stack.

Errors::

    InfraError
    ├── PulumiNotInstalled   no `pulumi` CLI on PATH (message says how to install it)
    ├── StackNotFoundError   outputs()/destroy() of a stack that does not exist
    └── DeployError          the engine reported a failure (its message is kept)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from kdf_remote.infra.settings import NAMESPACE

__all__ = [
    "PROJECT",
    "DeployError",
    "InfraError",
    "PulumiNotInstalled",
    "StackNotFoundError",
    "destroy",
    "outputs",
    "up",
]

PROJECT = "kdf-remote"
SECRET_CONFIG_KEYS = frozenset({f"{NAMESPACE}:ssh_private_key", "digitalocean:token"})
INSTALL_HINT = (
    "the `pulumi` CLI is not on PATH. Install it (https://www.pulumi.com/docs/iac/download-install/"
    ", e.g. `curl -fsSL https://get.pulumi.com | sh`), log in with `pulumi login` "
    "(or `pulumi login --local` for state on this machine), and retry."
)

OutputHandler = Callable[[str], Any]


class InfraError(Exception):
    """Base of the errors raised at this boundary."""


class PulumiNotInstalled(InfraError):  # noqa: N818 - the name the CLI imports
    """The ``pulumi`` CLI is missing."""

    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


class StackNotFoundError(InfraError):
    """The named stack does not exist in the current Pulumi backend."""


class DeployError(InfraError):
    """``pulumi up`` or ``destroy`` failed; the message carries the engine's explanation."""


def _require_cli() -> None:
    if shutil.which("pulumi") is None:
        raise PulumiNotInstalled


def _config_value(value: object) -> str:
    # The program reads structured values as JSON text, exactly as the CLI stores them.
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _qualified(key: str) -> str:
    return key if ":" in key else f"{NAMESPACE}:{key}"


def _auto() -> Any:
    try:
        from pulumi import automation
    except ImportError as exc:
        raise InfraError(
            "deploying needs the infra extra: pip install 'kdf-remote[infra]'"
        ) from exc
    return automation


def _stack(stack: str, *, create: bool) -> Any:
    """Create or select ``stack`` of the inline kdf-remote program."""
    _require_cli()
    auto = _auto()
    from kdf_remote.infra.program import main

    settings = auto.ProjectSettings(name=PROJECT, runtime="python")
    opts = auto.LocalWorkspaceOptions(project_settings=settings)
    try:
        if create:
            return auto.create_or_select_stack(
                stack_name=stack, project_name=PROJECT, program=main, opts=opts
            )
        return auto.select_stack(stack_name=stack, project_name=PROJECT, program=main, opts=opts)
    except auto.StackNotFoundError as exc:
        raise StackNotFoundError(f"no stack named {stack!r} in the current Pulumi backend") from exc


def _plain(result_outputs: Mapping[str, Any]) -> dict[str, Any]:
    return {name: output.value for name, output in result_outputs.items()}


def up(
    stack: str,
    provider: str,
    config: Mapping[str, object],
    on_output: OutputHandler | None = None,
) -> dict[str, Any]:
    """Create or update ``stack`` for ``provider`` (aws, do, custom) and return its outputs.

    ``config`` maps keys to values; keys without a namespace are ``kdf-remote:`` keys, others
    (``aws:profile``, ``digitalocean:token``) pass through. Lists and objects may be given as
    Python values. ``api_key`` comes back as plain text: the caller stores it 0600.
    """
    handle = _stack(stack, create=True)
    auto = _auto()
    values = {_qualified(k): _config_value(v) for k, v in config.items()}
    values[f"{NAMESPACE}:provider"] = provider
    handle.set_all_config(
        {k: auto.ConfigValue(value=v, secret=k in SECRET_CONFIG_KEYS) for k, v in values.items()}
    )
    try:
        result = handle.up(on_output=on_output, color="never")
    except auto.CommandError as exc:
        raise DeployError(str(exc)) from exc
    return _plain(result.outputs)


def destroy(stack: str, on_output: OutputHandler | None = None, *, remove: bool = False) -> None:
    """Destroy every resource of ``stack``; ``remove`` also deletes the stack and its config."""
    handle = _stack(stack, create=False)
    auto = _auto()
    try:
        handle.destroy(on_output=on_output, color="never")
        if remove:
            handle.workspace.remove_stack(stack)
    except auto.CommandError as exc:
        raise DeployError(str(exc)) from exc


def outputs(stack: str) -> dict[str, Any]:
    """The current outputs of ``stack`` (secrets in plain text, for ``profile import``)."""
    return _plain(_stack(stack, create=False).outputs())
