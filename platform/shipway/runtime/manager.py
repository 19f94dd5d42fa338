"""Runtime manager: makes the replicas match what the store says each deployment serves.

A reconcile loop, level- not edge-triggered: every pass reads the desired state,
asks the runtime to place or remove variants, and writes the replicas it sees back
to the store, where the gateway reads its routes.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import delete, select

from shipway import audit
from shipway.errors import ShipwayError
from shipway.runtime.local import LocalRuntime
from shipway.runtime.port import ReplicaStatus, VariantSpec
from shipway.store.db import Database
from shipway.store.models import Deployment, DeploymentStatus, Replica, ReplicaState

log = logging.getLogger(__name__)

STABLE = "stable"


class RuntimeManager:
    def __init__(self, db: Database, runtime: LocalRuntime) -> None:
        self.db = db
        self.runtime = runtime
        self._failed: dict[str, str] = {}  # deployment -> build that failed to place

    def desired(self) -> list[VariantSpec]:
        with self.db.session() as session:
            return [
                VariantSpec(
                    deployment=d.name,
                    variant=STABLE,
                    build_id=d.build_id,
                    run_id=d.build.model_version.mlflow_run_id,
                    artifact_path=d.build.artifact_path or "",
                    triton_model_name=d.build.triton_model_name or "",
                )
                for d in session.scalars(select(Deployment))
            ]

    def reconcile_once(self) -> None:
        desired = self.desired()
        wanted = {(s.deployment, s.variant) for s in desired}
        for spec in self.runtime.running():
            if (spec.deployment, spec.variant) not in wanted:
                log.info("removing %s/%s", spec.deployment, spec.variant)
                self.runtime.remove(spec.deployment, spec.variant)
        for spec in desired:
            if self._failed.get(spec.deployment) == spec.build_id:
                continue  # do not restart a build that cannot load until it changes
            try:
                statuses = self.runtime.place(spec)
            except ShipwayError as exc:
                log.error("placing %s failed: %s", spec.deployment, exc)
                self._failed[spec.deployment] = spec.build_id
                self._record(spec, [], failure=str(exc))
                continue
            self._failed.pop(spec.deployment, None)
            self._record(spec, statuses)

    def _record(
        self, spec: VariantSpec, statuses: list[ReplicaStatus], failure: str | None = None
    ) -> None:
        with self.db.session() as session:
            deployment = session.scalar(
                select(Deployment).where(Deployment.name == spec.deployment)
            )
            if deployment is None or deployment.build_id != spec.build_id:
                return  # changed while we worked; the next pass catches up
            seen = {
                (st.url, ReplicaState.READY if st.ready else ReplicaState.FAILED) for st in statuses
            }
            if seen != {(r.url, r.state) for r in deployment.replicas}:
                session.execute(delete(Replica).where(Replica.deployment_id == deployment.id))
                session.add_all(
                    Replica(
                        deployment_id=deployment.id,
                        variant=st.variant,
                        build_id=st.build_id,
                        url=st.url,
                        triton_model_name=st.triton_model_name,
                        pid=st.pid,
                        state=ReplicaState.READY if st.ready else ReplicaState.FAILED,
                    )
                    for st in statuses
                )
            ready = bool(statuses) and all(st.ready for st in statuses)
            status = DeploymentStatus.READY if ready else DeploymentStatus.FAILED
            message = failure or (None if ready else "a replica is not ready")
            if (deployment.status, deployment.message) != (status, message):
                deployment.status, deployment.message = status, message
                audit.record(
                    session,
                    "runtime",
                    f"deployment.{status}",
                    f"deployment/{spec.deployment}",
                    build=spec.build_id,
                    replicas=[st.url for st in statuses],
                    message=message,
                )

    def run(self, stop: threading.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                self.reconcile_once()
            except Exception:  # keep supervising; the next pass retries
                log.exception("reconcile pass failed")
            stop.wait(interval)
        self.runtime.close()
        with self.db.session() as session:
            session.execute(delete(Replica))
