"""The runtime manager's reconcile pass against the real state store.

The runtime here is a scripted implementation of the ``Runtime`` port (the local one,
with real tritonserver processes, is exercised in test_gateway_faults.py): what is
under test is what the manager writes to the store when a runtime reports, fails or
breaks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from shipway.container import Container
from shipway.errors import NotFound
from shipway.runtime.manager import RuntimeManager
from shipway.runtime.port import Phase, ReplicaStatus, VariantSpec
from shipway.services import deployments
from shipway.settings import Settings
from shipway.store.models import (
    Build,
    BuildStatus,
    Deployment,
    DeploymentStatus,
    ModelVersion,
    Replica,
    ReplicaState,
)

pytestmark = pytest.mark.integration


@dataclass
class ScriptedRuntime:
    """Answers ``place`` from a script per deployment: phases, or an exception."""

    script: dict[str, list[Phase] | Exception] = field(default_factory=dict)
    removed: list[tuple[str, str]] = field(default_factory=list)
    placed: dict[tuple[str, str], VariantSpec] = field(default_factory=dict)

    def place(self, spec: VariantSpec) -> list[ReplicaStatus]:
        self.placed[(spec.deployment, spec.variant)] = spec
        step = self.script[spec.deployment]
        if isinstance(step, Exception):
            raise step
        return [
            ReplicaStatus(
                spec.deployment,
                spec.variant,
                spec.build_id,
                f"http://127.0.0.1:{9000 + i}/{spec.deployment}/{spec.variant}",
                spec.triton_model_name,
                phase,
                message="exited" if phase is Phase.FAILED else None,
            )
            for i, phase in enumerate(step)
        ]

    def remove(self, deployment: str, variant: str) -> None:
        self.removed.append((deployment, variant))
        self.placed.pop((deployment, variant), None)

    def running(self) -> list[tuple[str, str]]:
        return list(self.placed)

    def close(self) -> None:
        self.placed.clear()


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    container = Container(Settings(home=tmp_path))
    with container.db.session() as session:
        mv = ModelVersion(
            name="m", version=1, mlflow_run_id="r", onnx_sha256="0", signature={}, tags={}
        )
        session.add(mv)
        session.flush()
        for build_id in ("b1", "b2"):
            session.add(
                Build(
                    id=build_id,
                    model_version_id=mv.id,
                    recipe="fp32",
                    target="onnxruntime-cpu",
                    status=BuildStatus.SUCCEEDED,
                    artifact_path="triton",
                    triton_model_name="m",
                )
            )
    yield container
    container.close()


def state(container: Container, name: str) -> tuple[str, str | None, list[str]]:
    with container.db.session() as session:
        d = session.scalar(select(Deployment).where(Deployment.name == name))
        assert d is not None
        return d.status, d.message, sorted(r.state for r in d.replicas)


def test_a_failed_pass_keeps_the_replicas_and_spares_the_others(container: Container) -> None:
    deployments.deploy(container, "a", "b1", "test", deployments.Scale(2))
    deployments.deploy(container, "b", "b1", "test")
    runtime = ScriptedRuntime({"a": [Phase.READY, Phase.READY], "b": [Phase.READY]})
    manager = RuntimeManager(container.db, runtime)
    manager.reconcile_once()
    assert state(container, "a") == (DeploymentStatus.READY, None, ["ready", "ready"])

    # The runtime cannot reach the registry for "a", and breaks outright on "b".
    runtime.script = {"a": NotFound("artifact gone"), "b": RuntimeError("bug")}
    manager.reconcile_once()
    # The rows stay (the replicas did not vanish because one pass failed); the
    # replicas still serve, so the deployment stays ready.
    assert state(container, "a") == (DeploymentStatus.READY, None, ["ready", "ready"])
    assert state(container, "b") == (DeploymentStatus.READY, None, ["ready"])

    # Failed while nothing serves: the failure is the message.
    deployments.deploy(container, "c", "b2", "test")
    runtime.script["c"] = NotFound("artifact gone")
    manager.reconcile_once()
    assert state(container, "c") == (DeploymentStatus.FAILED, "artifact gone", [])


def test_ready_once_the_minimum_serves(container: Container) -> None:
    deployments.deploy(container, "web", "b1", "test", deployments.Scale(1, 3), target_inflight=2.0)
    with container.db.session() as session:  # as the autoscaler would
        d = session.scalar(select(Deployment).where(Deployment.name == "web"))
        assert d is not None
        d.variants[0].desired_replicas = 3
    runtime = ScriptedRuntime({"web": [Phase.READY, Phase.STARTING, Phase.FAILED]})
    manager = RuntimeManager(container.db, runtime)
    manager.reconcile_once()
    assert runtime.placed[("web", "stable")].replicas == 3
    assert state(container, "web") == (
        DeploymentStatus.READY,
        None,
        ["failed", "ready", "starting"],
    )
    runtime.script["web"] = [Phase.STARTING, Phase.STARTING, Phase.FAILED]
    manager.reconcile_once()
    assert state(container, "web") == (
        DeploymentStatus.FAILED,
        "exited",
        ["failed", "starting", "starting"],
    )


def test_a_removed_variant_leaves_the_routes_at_once(container: Container) -> None:
    deployments.deploy(container, "web", "b1", "test")
    deployments.set_variant(container, "web", "canary", "b2", "test", weight=10)
    runtime = ScriptedRuntime({"web": [Phase.READY]})
    manager = RuntimeManager(container.db, runtime)
    manager.reconcile_once()
    with container.db.session() as session:
        assert sorted(r.variant for r in session.scalars(select(Replica))) == ["canary", "stable"]

    deployments.remove_variant(container, "web", "canary", "test")
    manager.reconcile_once()
    assert runtime.removed == [("web", "canary")]
    with container.db.session() as session:
        rows = list(session.scalars(select(Replica)))
        assert [(r.variant, r.state) for r in rows] == [("stable", ReplicaState.READY)]
