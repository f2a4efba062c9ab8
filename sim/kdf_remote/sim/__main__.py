"""``python -m kdf_remote.sim``: the same as the ``kdf-sim`` executable."""

from __future__ import annotations

from kdf_remote.sim.cli import main

main()
