"""secureml's own attack surface: safe loading, key files, encryption at rest, signed manifests."""
