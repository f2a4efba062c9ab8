"""kdf-remote's REST wire types, shared by the daemon (which encodes them) and the client (which decodes them)."""
