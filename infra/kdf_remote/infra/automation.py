"""The boundary ``kdf-remote deploy`` / ``destroy`` cross to drive the Pulumi program.

Three functions, all through Pulumi's Automation API with the program run inline (so an installed
``kdf-remote[infra]`` needs no checkout of ``infra/``); the ``pulumi`` CLI must be on PATH, and
its login (Pulumi Cloud or a self-managed backend) decides where stack state lives.

Stack configuration comes from the project directory ``work_dir`` (its ``Pulumi.yaml`` and, via
``stackConfigDir``, ``stacks/Pulumi.<stack>.yaml``); without one, from the current directory when
it holds this project's ``Pulumi.yaml``, else only from the ``config`` given to :func:`up`.

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
from pathlib import Path
from typing import Any

import yaml

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


def _is_project_dir(directory: Path) -> bool:
    try:
        document = yaml.safe_load((directory / "Pulumi.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(document, dict) and document.get("name") == PROJECT


def _project_dir(work_dir: Path | None) -> Path | None:
    """The project directory whose stack files hold the configuration, if there is one."""
    if work_dir is not None:
        if not _is_project_dir(work_dir):
            raise InfraError(f"{work_dir} holds no Pulumi.yaml of the {PROJECT} project")
        return work_dir
    here = Path.cwd()
    return here if _is_project_dir(here) else None


def _stack(stack: str, *, create: bool, work_dir: Path | None = None) -> Any:
    """Create or select ``stack`` of the inline kdf-remote program."""
    _require_cli()
    auto = _auto()
    from kdf_remote.infra.program import main

    project = _project_dir(work_dir)
    if project is None:
        settings = auto.ProjectSettings(name=PROJECT, runtime="python")
        opts = auto.LocalWorkspaceOptions(project_settings=settings)
    else:
        # No project_settings here: the workspace would write them over the directory's Pulumi.yaml.
        opts = auto.LocalWorkspaceOptions(work_dir=str(project))
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
    config: Mapping[str, object] | None = None,
    *,
    work_dir: Path | None = None,
    on_output: OutputHandler | None = None,
) -> dict[str, Any]:
    """Create or update ``stack`` for ``provider`` (aws, do, custom) and return its outputs.

    ``config`` maps keys to values set on the stack before the update (on top of its stack
    file); keys without a namespace are ``kdf-remote:`` keys, others (``aws:profile``,
    ``digitalocean:token``) pass through. Lists and objects may be given as Python values.
    ``work_dir`` is the project directory (see the module docstring). ``api_key`` comes back as
    plain text: the caller stores it 0600.
    """
    handle = _stack(stack, create=True, work_dir=work_dir)
    auto = _auto()
    values = {_qualified(k): _config_value(v) for k, v in (config or {}).items()}
    values[f"{NAMESPACE}:provider"] = provider
    handle.set_all_config(
        {k: auto.ConfigValue(value=v, secret=k in SECRET_CONFIG_KEYS) for k, v in values.items()}
    )
    try:
        result = handle.up(on_output=on_output, color="never")
    except auto.CommandError as exc:
        raise DeployError(str(exc)) from exc
    return _plain(result.outputs)


def destroy(
    stack: str,
    *,
    work_dir: Path | None = None,
    on_output: OutputHandler | None = None,
    remove: bool = False,
) -> None:
    """Destroy every resource of ``stack``; ``remove`` also deletes the stack and its config."""
    handle = _stack(stack, create=False, work_dir=work_dir)
    auto = _auto()
    try:
        handle.destroy(on_output=on_output, color="never")
        if remove:
            handle.workspace.remove_stack(stack)
    except auto.CommandError as exc:
        raise DeployError(str(exc)) from exc


def outputs(stack: str, *, work_dir: Path | None = None) -> dict[str, Any]:
    """The current outputs of ``stack`` (secrets in plain text, for ``profile import``)."""
    return _plain(_stack(stack, create=False, work_dir=work_dir).outputs())
