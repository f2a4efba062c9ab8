"""The daemon's security layer (issue 4).

Framework-free parts, each usable and tested alone:

- :mod:`.keystore`: API keys (``kdfr_...``), the hashed keys file, the in-memory key store;
- :mod:`.tokens`: HS256 access tokens, key-file checks, revocation by ``jti``;
- :mod:`.ipaccess`: client address (trusted proxies only), the IP allow-list;
- :mod:`.ratelimit`: token buckets and the failed-authentication lock-out;
- :mod:`.signing`: request signatures, the nonce cache;
- :mod:`.audit`: the hash-chained audit log and its verifier;
- :mod:`.tls` / :mod:`.certs`: Mozilla-intermediate server context, ``tls init``;
- :mod:`.process`: the unprivileged account KDF runs as when the daemon is root;
- :mod:`.runtime`: all of the above built from ``security:``.

Litestar-facing parts: :mod:`.middleware` (the raw ASGI gate), :mod:`.guards`,
:mod:`.controllers`, :mod:`.plugin` (wiring); :mod:`.cli` (cyclopts sub-apps, attached by
:func:`.commands.register`).

Nothing is imported here, so ``import kdf_remote.daemon.security.keystore`` (the CLI) stays
cheap and free of Litestar.
"""
