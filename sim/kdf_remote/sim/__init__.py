"""kdf-sim: a simulator of the Komodo DeFi Framework (KDF) executable, for tests.

Not KDF: no keys, no chains, no peers. Run it as a process (``kdf-sim`` or
``python -m kdf_remote.sim``); :mod:`kdf_remote.sim.harness` starts it from tests.
See ``docs/kdf-sim.md``.
"""
