"""The inference gateway: KServe v2 HTTP in front of the Triton replicas (local ``Router``)."""
