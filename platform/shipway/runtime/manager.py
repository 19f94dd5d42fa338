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
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipway import audit
from shipway.errors import ShipwayError
from shipway.runtime.autoscaling import AutoscalePolicy, History, decide
from shipway.runtime.port import Phase, ReplicaStatus, Runtime, VariantSpec
from shipway.store.db import Database
from shipway.store.models import Deployment, DeploymentStatus, Replica, ReplicaState, Variant

log = logging.getLogger(__name__)

STATE = {
    Phase.STARTING: ReplicaState.STARTING,
    Phase.READY: ReplicaState.READY,
    Phase.DRAINING: ReplicaState.DRAINING,
    Phase.FAILED: ReplicaState.FAILED,
}
PHASE = {state: phase for phase, state in STATE.items()}

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
        float(_stabilization_window(deployment.autoscale)),
    )


class RuntimeManager:
    def __init__(
        self,
        db: Database,
        runtime: Runtime,
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
            if key not in wanted:  # drains first; called each pass until it is gone
                log.info("removing %s/%s", *key)
                self.runtime.remove(*key)
        self._forget_removed(wanted)
        for item in self.desired():  # re-read: the autoscaler may have changed counts
            failure: str | None = None
            statuses: list[ReplicaStatus] | None
            try:
                statuses = self.runtime.place(item.spec)
            except ShipwayError as exc:
                log.error("placing %s/%s failed: %s", item.spec.deployment, item.spec.variant, exc)
                statuses, failure = None, str(exc)
            except Exception as exc:  # one broken variant must not starve the others
                log.exception("placing %s/%s failed", item.spec.deployment, item.spec.variant)
                statuses, failure = None, f"internal error: {exc}"
            required = item.policy.min_replicas if item.policy else item.spec.replicas
            self._record(item.spec, statuses, failure, max(1, required))

    def _forget_removed(self, wanted: set[tuple[str, str]]) -> None:
        """Replica rows of removed variants go at once, so no route names them."""
        with self.db.session() as session:
            rows = session.execute(
                select(Replica, Deployment.name).join(
                    Deployment, Replica.deployment_id == Deployment.id
                )
            )
            for row, deployment in rows:
                if (deployment, row.variant) not in wanted:
                    session.delete(row)

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
        self,
        spec: VariantSpec,
        statuses: list[ReplicaStatus] | None,
        failure: str | None,
        required: int,
    ) -> None:
        """Write the replicas back; ``None`` (a failed pass) leaves the rows as they were."""
        with self.db.session() as session:
            deployment = session.scalar(
                select(Deployment).where(Deployment.name == spec.deployment)
            )
            if deployment is None:
                return  # deleted while we worked; the next pass removes its replicas
            existing = {r.url: r for r in deployment.replicas if r.variant == spec.variant}
            if statuses is not None:
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
                phases = [(st.build_id, st.phase, st.message) for st in statuses]
            else:
                phases = [(r.build_id, PHASE[r.state], None) for r in existing.values()]
            if spec.variant == "stable":
                self._update_status(session, deployment, spec, phases, failure, required)

    @staticmethod
    def _update_status(
        session: Session,
        deployment: Deployment,
        spec: VariantSpec,
        phases: list[tuple[str, Phase, str | None]],
        failure: str | None,
        required: int,
    ) -> None:
        """Ready once the minimum serves: an autoscaler's extra replica starting up, or
        one replica of three restarting, is not an outage."""
        serving = [(phase, message) for build, phase, message in phases if build == spec.build_id]
        ready = sum(phase is Phase.READY for phase, _ in serving)
        failed = [message for phase, message in serving if phase is Phase.FAILED]
        # Starting again after a failure, a replica still carries it (a pod in
        # CrashLoopBackOff keeps its last termination reason): the deployment stays
        # failed with Triton's words instead of turning pending at every retry.
        failed += [m for phase, m in serving if phase is Phase.STARTING and m is not None]
        if ready >= required:
            status, message = DeploymentStatus.READY, None
        elif failure:
            status, message = DeploymentStatus.FAILED, failure
        elif failed:
            status, message = DeploymentStatus.FAILED, failed[0]
        else:
            status, message = DeploymentStatus.PENDING, f"{ready}/{required} replicas ready"
        if (deployment.status, deployment.message) != (status, message):
            deployment.status, deployment.message = status, message
            audit.record(
                session,
                "runtime",
                f"deployment.{status}",
                f"deployment/{spec.deployment}",
                build=spec.build_id,
                ready_replicas=ready,
                message=message,
            )

    def run(self, stop: threading.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                self.reconcile_once()
            except Exception:  # keep supervising; the next pass retries
                log.exception("reconcile pass failed")
            stop.wait(interval)
        # Out of the routes first, then stopped: the gateway never picks a dead replica.
        # The replicas stop even when the store cannot be reached.
        try:
            with self.db.session() as session:
                for row in session.scalars(select(Replica)):
                    session.delete(row)
        except Exception:
            log.exception("could not take the replicas out of the routes")
        finally:
            started = time.monotonic()
            self.runtime.close()
            log.info("replicas stopped in %.1fs", time.monotonic() - started)


def _stabilization_window(autoscale: dict[str, Any]) -> float:
    """Seconds of the scale-down window; rows written before the HPA's name was taken
    hold it as ``scale_down_window_s``."""
    for key in ("scale_down_stabilization_window_seconds", "scale_down_window_s"):
        if autoscale.get(key) is not None:
            return float(autoscale[key])
    return 30.0
