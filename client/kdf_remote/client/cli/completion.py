"""`kdf-remote --install-completion`, in its own module so that it is imported only when run.

cyclopts' ``register_install_completion_command`` imports its completion machinery (and
`subprocess`) when the app is built, i.e. on every command; registering this module's command by
import path instead keeps that off the start-up path. The command is cyclopts' own, bound to our
app, so its options and behaviour are exactly those of ``register_install_completion_command``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cyclopts.completion.install import create_install_completion_command

from kdf_remote.client.cli.app import app

__all__ = ["install_completion"]

#: ``--install-completion [--shell SHELL] [-o PATH]``; also adds the source line to the shell's
#: start-up file (``add_to_startup=True``, as before).
install_completion: Callable[..., Any] = create_install_completion_command(
    app.install_completion, add_to_startup=True
)
