"""kdf_remote.sim."""
