"""kdf_remote.infra."""
