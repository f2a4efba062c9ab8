"""kdf_remote.supervisor."""
