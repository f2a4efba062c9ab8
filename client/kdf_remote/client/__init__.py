"""kdf_remote.client."""
