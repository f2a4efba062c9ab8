"""Entry point of the ``pulumi`` CLI for this project (``Pulumi.yaml`` has ``main: infra/``)."""

from __future__ import annotations

from kdf_remote.infra.program import main

main()
