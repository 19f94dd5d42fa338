"""The ``Runtime`` port: one interface, a local and a Kubernetes implementation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class VariantSpec:
    """What should run: a build of a deployment variant (stable, canary, experiment arm)."""

    deployment: str
    variant: str
    build_id: str
    run_id: str  # MLflow run holding the build's Triton repository
    artifact_path: str
    triton_model_name: str
    replicas: int = 1


@dataclass(frozen=True)
class ReplicaStatus:
    deployment: str
    variant: str
    build_id: str
    url: str
    triton_model_name: str
    ready: bool
    pid: int | None = None
    message: str | None = None


class Runtime(Protocol):
    def place(self, spec: VariantSpec) -> list[ReplicaStatus]:
        """Make ``spec`` run (idempotent); return its replicas once they are ready."""
        ...

    def remove(self, deployment: str, variant: str) -> None:
        """Stop every replica of a variant."""
        ...

    def status(self) -> list[ReplicaStatus]:
        """Every replica this runtime runs, with a fresh readiness check."""
        ...

    def close(self) -> None:
        """Stop everything this runtime started."""
        ...
