"""What training, serving and operations must agree on: feature schema, artifact contract, store."""
