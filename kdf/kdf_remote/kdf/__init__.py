"""kdf_remote.kdf."""
