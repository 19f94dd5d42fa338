"""The ``Runtime`` port: one interface, a local and a Kubernetes implementation."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
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


class Phase(StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"  # out of the routes; stopped after the drain period
    FAILED = "failed"  # exited or never became ready; restarted with backoff


@dataclass(frozen=True)
class ReplicaStatus:
    deployment: str
    variant: str
    build_id: str
    url: str
    triton_model_name: str
    phase: Phase
    pid: int | None = None
    metrics_url: str | None = None
    message: str | None = None

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY


class Runtime(Protocol):
    def place(self, spec: VariantSpec) -> list[ReplicaStatus]:
        """Move a variant one step towards ``spec`` without blocking; report its replicas.

        Called again and again (level-triggered): starts missing replicas, restarts
        crashed ones with backoff, drains extras, and replaces an older build only
        once the new build's replicas are ready.
        """
        ...

    def remove(self, deployment: str, variant: str) -> None:
        """Drain, then stop, every replica of a variant; called each pass until gone."""
        ...

    def running(self) -> list[tuple[str, str]]:
        """The (deployment, variant) pairs that still have replicas here."""
        ...

    def close(self) -> None:
        """Stop everything this runtime started."""
        ...
