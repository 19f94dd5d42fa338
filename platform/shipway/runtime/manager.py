"""Runtime manager: makes the replicas match what the store says each deployment serves.

A reconcile loop, level- not edge-triggered: every pass reads the desired variants,
lets the autoscaler adjust replica counts from the gateway's load, asks the runtime to
move each variant one step, and writes the replicas it reports back to the store,
where the gateway reads its routes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from shipway import audit
from shipway.errors import ShipwayError
from shipway.runtime.autoscaling import AutoscalePolicy, History, decide
from shipway.runtime.local import LocalRuntime
from shipway.runtime.port import Phase, ReplicaStatus, VariantSpec
from shipway.store.db import Database
from shipway.store.models import Deployment, DeploymentStatus, Replica, ReplicaState, Variant

log = logging.getLogger(__name__)

STATE = {
    Phase.STARTING: ReplicaState.STARTING,
    Phase.READY: ReplicaState.READY,
    Phase.DRAINING: ReplicaState.DRAINING,
    Phase.FAILED: ReplicaState.FAILED,
}

LoadSource = Callable[[float], dict[tuple[str, str], float]]  # now -> mean in-flight


@dataclass(frozen=True)
class Desired:
    spec: VariantSpec
    policy: AutoscalePolicy | None


def autoscale_policy(deployment: Deployment, variant: Variant) -> AutoscalePolicy | None:
    target = (deployment.autoscale or {}).get("target_inflight")
    if not target or variant.max_replicas <= variant.min_replicas:
        return None
    return AutoscalePolicy(
        variant.min_replicas,
        variant.max_replicas,
        float(target),
        float(deployment.autoscale.get("scale_down_window_s", 30.0)),
    )


class RuntimeManager:
    def __init__(
        self,
        db: Database,
        runtime: LocalRuntime,
        load: LoadSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.runtime = runtime
        self.load = load
        self.clock = clock
        self._history: dict[tuple[str, str], History] = {}

    def desired(self) -> list[Desired]:
        with self.db.session() as session:
            wanted = []
            for d in session.scalars(select(Deployment)):
                for v in d.variants:
                    spec = VariantSpec(
                        deployment=d.name,
                        variant=v.name,
                        build_id=v.build_id,
                        run_id=v.build.model_version.mlflow_run_id,
                        artifact_path=v.build.artifact_path or "",
                        triton_model_name=v.build.triton_model_name or "",
                        replicas=max(v.min_replicas, min(v.max_replicas, v.desired_replicas)),
                    )
                    wanted.append(Desired(spec, autoscale_policy(d, v)))
            return wanted

    def reconcile_once(self) -> None:
        desired = self.desired()
        self._autoscale(desired)
        wanted = {(d.spec.deployment, d.spec.variant) for d in desired}
        for key in self.runtime.running():
            if key not in wanted:
                log.info("removing %s/%s", *key)
                self.runtime.remove(*key)
        for item in self.desired():  # re-read: the autoscaler may have changed counts
            try:
                statuses = self.runtime.place(item.spec)
            except ShipwayError as exc:
                log.error("placing %s/%s failed: %s", item.spec.deployment, item.spec.variant, exc)
                statuses, failure = [], str(exc)
            else:
                failure = None
            self._record(item.spec, statuses, failure)

    def _autoscale(self, desired: list[Desired]) -> None:
        scaled = [d for d in desired if d.policy]
        if not scaled or self.load is None:
            return
        now = self.clock()
        try:
            load = self.load(now)
        except Exception as exc:
            log.warning("no load reading from the gateway: %s", exc)
            return
        for item in scaled:
            key = (item.spec.deployment, item.spec.variant)
            if key not in load:
                continue
            assert item.policy is not None
            replicas, self._history[key] = decide(
                self._history.get(key, ()), now, item.spec.replicas, load[key], item.policy
            )
            if replicas != item.spec.replicas:
                self._set_desired(item.spec, replicas, load[key], item.policy)

    def _set_desired(
        self, spec: VariantSpec, replicas: int, inflight: float, policy: AutoscalePolicy
    ) -> None:
        with self.db.session() as session:
            variant = session.scalar(
                select(Variant)
                .join(Deployment, Variant.deployment_id == Deployment.id)
                .where(Deployment.name == spec.deployment, Variant.name == spec.variant)
            )
            if variant is None:
                return
            variant.desired_replicas = replicas
            audit.record(
                session,
                "autoscaler",
                "variant.scale",
                f"deployment/{spec.deployment}/{spec.variant}",
                previous=spec.replicas,
                replicas=replicas,
                inflight=round(inflight, 3),
                target_inflight=policy.target_inflight,
            )
        log.info(
            "autoscaled %s/%s: %d -> %d (in flight %.2f)",
            spec.deployment,
            spec.variant,
            spec.replicas,
            replicas,
            inflight,
        )

    def _record(
        self, spec: VariantSpec, statuses: list[ReplicaStatus], failure: str | None
    ) -> None:
        with self.db.session() as session:
            deployment = session.scalar(
                select(Deployment).where(Deployment.name == spec.deployment)
            )
            if deployment is None:
                return  # deleted while we worked; the next pass removes its replicas
            existing = {r.url: r for r in deployment.replicas if r.variant == spec.variant}
            reported = {st.url: st for st in statuses}
            for url, row in existing.items():
                if url not in reported:
                    session.delete(row)
            for url, st in reported.items():
                row = existing.get(url)
                if row is None:
                    row = Replica(deployment_id=deployment.id, variant=spec.variant, url=url)
                    session.add(row)
                row.build_id, row.triton_model_name = st.build_id, st.triton_model_name
                row.pid, row.metrics_url, row.state = st.pid, st.metrics_url, STATE[st.phase]
            if spec.variant == "stable":
                self._update_status(session, deployment, spec, statuses, failure)

    @staticmethod
    def _update_status(session, deployment, spec, statuses, failure) -> None:  # type: ignore[no-untyped-def]
        serving = [s for s in statuses if s.build_id == spec.build_id]
        ready = [s for s in serving if s.ready]
        if failure:
            status, message = DeploymentStatus.FAILED, failure
        elif len(ready) >= spec.replicas:
            status, message = DeploymentStatus.READY, None
        elif any(s.phase is Phase.FAILED for s in serving):
            status = DeploymentStatus.FAILED
            message = next(s.message for s in serving if s.phase is Phase.FAILED)
        else:
            status, message = (
                DeploymentStatus.PENDING,
                f"{len(ready)}/{spec.replicas} replicas ready",
            )
        if (deployment.status, deployment.message) != (status, message):
            deployment.status, deployment.message = status, message
            audit.record(
                session,
                "runtime",
                f"deployment.{status}",
                f"deployment/{spec.deployment}",
                build=spec.build_id,
                replicas=[s.url for s in ready],
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
            for row in session.scalars(select(Replica)):
                session.delete(row)
