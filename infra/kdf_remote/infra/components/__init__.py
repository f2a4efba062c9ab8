"""ComponentResources of the kdf-remote Pulumi program, one module per concept."""
