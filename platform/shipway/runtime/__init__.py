"""Runtimes place Triton replicas for a deployment's variants and report their health."""
