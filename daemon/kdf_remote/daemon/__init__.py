"""kdf_remote.daemon: ``kdf-remote-daemon``, the REST service over the supervisor.

Public entry points (imported lazily so this package stays cheap to import):
:func:`kdf_remote.daemon.app.create_app` builds the ASGI app from
:class:`kdf_remote.daemon.settings.Settings` (``load_settings``/``parse_settings``);
:func:`kdf_remote.daemon.server.build_server_config` and ``serve`` run it under uvicorn;
:mod:`kdf_remote.daemon.auth` is the authentication seam (``Authenticator``, ``requires``).
"""
