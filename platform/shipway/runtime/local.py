"""Local ``Runtime``: ``tritonserver`` processes on this machine, one per replica."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from shipway.registry.mlflow_registry import ModelRegistry
from shipway.runtime.port import ReplicaStatus, VariantSpec
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess

log = logging.getLogger(__name__)


class LocalRuntime:
    def __init__(
        self,
        registry: ModelRegistry,
        dist: TritonDistribution,
        workdir: Path,
        start_timeout: float = 120.0,
    ) -> None:
        self.registry = registry
        self.dist = dist
        self.workdir = workdir
        self.start_timeout = start_timeout
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], tuple[VariantSpec, list[TritonProcess]]] = {}

    def _repository(self, spec: VariantSpec) -> Path:
        """The build's model repository, fetched from MLflow once per build."""
        repo = self.workdir / "repos" / spec.build_id
        if not (repo / spec.triton_model_name / "config.pbtxt").exists():
            staging = self.workdir / "repos" / f".{spec.build_id}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            fetched = self.registry.download(spec.run_id, spec.artifact_path, staging)
            shutil.rmtree(repo, ignore_errors=True)
            fetched.rename(repo)
            shutil.rmtree(staging, ignore_errors=True)
        return repo

    def place(self, spec: VariantSpec) -> list[ReplicaStatus]:
        key = (spec.deployment, spec.variant)
        with self._lock:
            current = self._running.get(key)
        if current and current[0] == spec and all(p.alive() for p in current[1]):
            return self._statuses(spec, current[1])
        repo = self._repository(spec)
        started: list[TritonProcess] = []
        try:
            for index in range(spec.replicas):
                log_path = self.workdir / "logs" / f"{spec.deployment}-{spec.variant}-{index}.log"
                process = TritonProcess(self.dist, repo, log_path)
                process.start()
                started.append(process)
            for process in started:
                process.wait_ready(self.start_timeout)
        except Exception:
            for process in started:
                process.stop()
            raise
        with self._lock:
            old = self._running.get(key)
            self._running[key] = (spec, started)
        if old:  # new replicas are ready before the old ones go
            for process in old[1]:
                process.stop()
        log.info("placed %s/%s build %s on %s", *key, spec.build_id, [p.url for p in started])
        return self._statuses(spec, started)

    def remove(self, deployment: str, variant: str) -> None:
        with self._lock:
            entry = self._running.pop((deployment, variant), None)
        for process in entry[1] if entry else []:
            process.stop()

    def status(self) -> list[ReplicaStatus]:
        with self._lock:
            entries = list(self._running.values())
        return [status for spec, procs in entries for status in self._statuses(spec, procs)]

    def running(self) -> list[VariantSpec]:
        with self._lock:
            return [spec for spec, _ in self._running.values()]

    def close(self) -> None:
        with self._lock:
            entries, self._running = list(self._running.values()), {}
        for _, processes in entries:
            for process in processes:
                process.stop()

    @staticmethod
    def _statuses(spec: VariantSpec, processes: list[TritonProcess]) -> list[ReplicaStatus]:
        return [
            ReplicaStatus(
                spec.deployment,
                spec.variant,
                spec.build_id,
                p.url,
                spec.triton_model_name,
                ready=p.ready(),
                pid=p.pid,
                message=None if p.alive() else f"exited; log:\n{p.tail(5)}",
            )
            for p in processes
        ]
