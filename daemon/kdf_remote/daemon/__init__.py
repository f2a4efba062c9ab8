"""kdf_remote.daemon."""
