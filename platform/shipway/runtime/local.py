"""Local ``Runtime``: supervised ``tritonserver`` processes on this machine.

Level-triggered and non-blocking: each ``place`` call looks at the processes, moves
them one step (start, promote to ready, restart with backoff, drain, stop) and
returns at once, so one slow replica never holds up the others.

Replicas die with the process that runs this runtime (``processes.spawn``) and are
recorded under ``workdir/processes``; ``reap_leftovers`` (called when a runtime
manager starts) stops whatever a previous runtime on the same directory left behind.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shipway.errors import ShipwayError
from shipway.registry.mlflow_registry import ModelRegistry
from shipway.runtime.port import Phase, ReplicaStatus, VariantSpec
from shipway.runtime.processes import Ledger
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess, stop_all

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
# Failed readiness probes in a row before a ready replica leaves the routes, as a
# Kubernetes readinessProbe's failureThreshold: a replica saturated by the very load
# that makes the autoscaler add another may answer a probe late, and must keep serving.
READY_FAILURE_THRESHOLD = 3


@dataclass
class Replica:
    process: TritonProcess
    build_id: str
    triton_model_name: str
    phase: Phase = Phase.STARTING
    started_at: float = 0.0
    draining_since: float = 0.0
    failures: int = 0  # consecutive exits or failed starts
    missed_probes: int = 0  # consecutive failed readiness probes while ready
    retry_at: float = 0.0
    message: str | None = None


@dataclass
class VariantRun:
    spec: VariantSpec
    replicas: list[Replica] = field(default_factory=list)


class LocalRuntime:
    def __init__(
        self,
        registry: ModelRegistry,
        dist: TritonDistribution,
        workdir: Path,
        start_timeout: float = 120.0,
        drain_seconds: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        stop_grace: float = 10.0,
    ) -> None:
        self.registry = registry
        self.dist = dist
        self.workdir = workdir
        self.start_timeout = start_timeout
        self.drain_seconds = drain_seconds
        self.clock = clock
        self.stop_grace = stop_grace  # seconds a replica has to shut down before SIGKILL
        self.ledger = Ledger(workdir / "processes")
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._runs: dict[tuple[str, str], VariantRun] = {}
        self._serial = 0

    # ---- the port ----------------------------------------------------------------

    def place(self, spec: VariantSpec) -> list[ReplicaStatus]:
        # A download may take seconds: not under the lock. A failed one is raised only
        # after the replicas already running have been looked after.
        repo: Path | None = None
        fetch_error: ShipwayError | None = None
        try:
            repo = self._repository(spec)
        except ShipwayError as exc:
            fetch_error = exc
        with self._lock:
            run = self._runs.setdefault((spec.deployment, spec.variant), VariantRun(spec))
            run.spec = spec
            now = self.clock()
            for replica in run.replicas:  # older builds too: they serve until replaced
                if replica.phase != Phase.DRAINING:
                    self._supervise(replica, now)
            current = [
                r for r in run.replicas if r.build_id == spec.build_id and r.phase != Phase.DRAINING
            ]
            if len(current) < spec.replicas and repo is not None:
                for _ in range(spec.replicas - len(current)):
                    replica = self._start(spec, repo, now)
                    run.replicas.append(replica)
                    current.append(replica)
            elif len(current) > spec.replicas:
                # Shed the least useful first: not-ready before ready, newest first.
                extras = sorted(current, key=lambda r: (r.phase == Phase.READY, -r.started_at))
                for replica in extras[: len(current) - spec.replicas]:
                    self._drain(replica, now)
            ready = [r for r in current if r.phase == Phase.READY]
            if len(ready) >= spec.replicas:  # the new build carries the load: retire the old
                for replica in run.replicas:
                    if replica.build_id != spec.build_id and replica.phase != Phase.DRAINING:
                        self._drain(replica, now)
            drained = self._reap(run, now)
            statuses = [self._status(spec, r) for r in run.replicas]
        # Stopping waits for the processes: not under the lock.
        stop_all((r.process for r in drained), self.stop_grace)
        if fetch_error is not None and len(current) < spec.replicas:
            raise fetch_error
        return statuses

    def remove(self, deployment: str, variant: str) -> None:
        """Drain the variant's replicas, then stop them; call again until it is gone.

        The gateway stops routing to a removed variant within its refresh period, so
        requests already sent to these replicas still get their answers.
        """
        with self._lock:
            run = self._runs.get((deployment, variant))
            if run is None:
                return
            now = self.clock()
            for replica in run.replicas:
                if replica.phase != Phase.DRAINING:
                    self._drain(replica, now)
            drained = self._reap(run, now)
            if not run.replicas:
                del self._runs[(deployment, variant)]
        stop_all((r.process for r in drained), self.stop_grace)

    def close(self) -> None:
        """Stop every replica, all at once: within ``stop_grace`` + a few seconds
        however many there are. One after the other, the eight replicas of the rollouts
        e2e tests took longer than the 30 s the test plane waited before it SIGKILLed
        the runtime manager, and five were left running."""
        with self._lock:
            runs, self._runs = list(self._runs.values()), {}
        stop_all((r.process for run in runs for r in run.replicas), self.stop_grace)

    def reap_leftovers(self) -> int:
        """Stop the replicas a previous runtime on this workdir left running; how many.

        Only groups whose starter is gone, identified by pid and start time (a reused
        pid is never touched); see ``processes.Ledger.reap``.
        """
        return len(self.ledger.reap(self.stop_grace))

    def running(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._runs)

    # ---- steps -------------------------------------------------------------------

    def _start(self, spec: VariantSpec, repo: Path, now: float) -> Replica:
        self._serial += 1
        log_path = self.workdir / "logs" / f"{spec.deployment}-{spec.variant}-{self._serial}.log"
        process = TritonProcess(self.dist, repo, log_path, ledger=self.ledger)
        replica = Replica(process, spec.build_id, spec.triton_model_name, started_at=now)
        process.start()
        log.info("starting %s/%s replica on %s", spec.deployment, spec.variant, process.url)
        return replica

    def _supervise(self, replica: Replica, now: float) -> None:
        process = replica.process
        if replica.phase == Phase.FAILED:
            if now >= replica.retry_at:
                log.info("restarting replica %s (failure %d)", process.url, replica.failures)
                # Keep the address on the first retry (the routes still name it); after
                # that, the port itself may be the trouble (taken by another process).
                process.start(reuse_ports=replica.failures <= 1)
                replica.phase, replica.started_at = Phase.STARTING, now
            return
        if not process.alive():
            replica.failures += 1
            replica.message = process.load_errors() or f"exited; log: {process.log_path}"
            backoff = min(MAX_BACKOFF, 2.0 ** (replica.failures - 1))
            replica.phase, replica.retry_at = Phase.FAILED, now + backoff
            log.warning(
                "replica %s exited; retry in %.0fs: %s", process.url, backoff, replica.message
            )
            process.stop()
            return
        if replica.phase == Phase.STARTING:
            if process.model_ready(replica.triton_model_name):
                replica.phase, replica.failures, replica.message = Phase.READY, 0, None
            elif now - replica.started_at > self.start_timeout:
                replica.message = f"not ready after {self.start_timeout:.0f}s"
                process.stop()  # the next pass sees it dead and schedules a retry
        elif replica.phase == Phase.READY:
            if process.model_ready(replica.triton_model_name):
                replica.missed_probes = 0
                return
            replica.missed_probes += 1
            if replica.missed_probes >= READY_FAILURE_THRESHOLD:
                # Alive but not answering: out of the routes, and the start timeout
                # counts from now, so a replica that served for hours is not killed.
                log.warning("replica %s stopped answering ready", process.url)
                replica.phase, replica.started_at = Phase.STARTING, now
                replica.missed_probes = 0

    def _drain(self, replica: Replica, now: float) -> None:
        log.info("draining replica %s", replica.process.url)
        replica.phase, replica.draining_since = Phase.DRAINING, now

    def _reap(self, run: VariantRun, now: float) -> list[Replica]:
        """Take out the replicas whose drain period has ended; the caller stops them."""
        done = [
            r
            for r in run.replicas
            if r.phase == Phase.DRAINING and now - r.draining_since >= self.drain_seconds
        ]
        run.replicas = [r for r in run.replicas if r not in done]
        return done

    def _repository(self, spec: VariantSpec) -> Path:
        """The build's model repository, fetched from MLflow once per build."""
        repo = self.workdir / "repos" / spec.build_id
        if (repo / spec.triton_model_name / "config.pbtxt").exists():
            return repo
        with self._fetch_lock:
            if (repo / spec.triton_model_name / "config.pbtxt").exists():
                return repo  # fetched by another caller meanwhile
            staging = self.workdir / "repos" / f".{spec.build_id}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            fetched = self.registry.download(spec.run_id, spec.artifact_path, staging)
            shutil.rmtree(repo, ignore_errors=True)
            fetched.rename(repo)
            shutil.rmtree(staging, ignore_errors=True)
        return repo

    @staticmethod
    def _status(spec: VariantSpec, replica: Replica) -> ReplicaStatus:
        p = replica.process
        return ReplicaStatus(
            spec.deployment,
            spec.variant,
            replica.build_id,
            p.url,
            replica.triton_model_name,
            replica.phase,
            pid=p.pid,
            metrics_url=p.metrics_url,
            message=replica.message,
        )
