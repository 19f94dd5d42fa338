"""The build of one engine, stage by stage. Idempotent: a re-delivered build that
already succeeded is a no-op, and one that died half-way starts its stages again
without duplicating artifacts (each build logs to its own artifact path).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

from shipway import audit
from shipway.builds.packaging import package_repository, triton_model_name
from shipway.builds.recipes import Target
from shipway.errors import BuildFailed, ShipwayError
from shipway.registry.mlflow_registry import MODEL_PATH, ONNX_FILE, ModelRegistry
from shipway.registry.signature import Signature
from shipway.store.db import Database
from shipway.store.models import Build, BuildStatus

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


def build_artifact_path(build_id: str) -> str:
    return f"builds/{build_id}/triton"


class BuildPipeline:
    def __init__(self, db: Database, registry: ModelRegistry) -> None:
        self.db = db
        self.registry = registry

    def run(self, build_id: str, progress: Progress | None = None) -> None:
        with self.db.session() as session:
            build = session.get(Build, build_id)
            if build is None:
                raise BuildFailed(f"build {build_id} does not exist")
            if build.status == BuildStatus.SUCCEEDED:
                log.info("build %s already succeeded; nothing to do", build_id)
                return
            build.status, build.error = BuildStatus.RUNNING, None
            version = build.model_version
            run_id, model_name = version.mlflow_run_id, version.name
            signature = Signature.from_dict(version.signature)
            target = Target(build.target)

        def stage(name: str, fraction: float) -> None:
            with self.db.session() as session:
                row = session.get(Build, build_id)
                assert row is not None
                row.stage, row.progress = name, fraction
            if progress:
                progress(name, fraction)

        try:
            artifact_path = build_artifact_path(build_id)
            triton_name = triton_model_name(model_name, build_id)
            if self.registry.has_artifact(run_id, artifact_path):
                stage("already-packaged", 0.9)  # a previous delivery got this far
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    stage("fetch-model", 0.1)
                    model_dir = self.registry.download(run_id, MODEL_PATH, Path(tmp) / "src")
                    stage("package-triton", 0.5)
                    repo = Path(tmp) / "repo"
                    package_repository(repo, triton_name, model_dir / ONNX_FILE, signature, target)
                    stage("upload-artifacts", 0.8)
                    self.registry.log_dir(run_id, repo, artifact_path)
        except ShipwayError as exc:
            self._finish(build_id, BuildStatus.FAILED, error=str(exc))
            if exc.retriable:
                raise
            return
        self._finish(
            build_id, BuildStatus.SUCCEEDED, artifact_path=artifact_path, triton_name=triton_name
        )

    def _finish(
        self,
        build_id: str,
        status: BuildStatus,
        *,
        error: str | None = None,
        artifact_path: str | None = None,
        triton_name: str | None = None,
    ) -> None:
        with self.db.session() as session:
            build = session.get(Build, build_id)
            assert build is not None
            build.status, build.error = status, error
            build.stage, build.progress = (
                ("done", 1.0)
                if status == BuildStatus.SUCCEEDED
                else (
                    "failed",
                    build.progress,
                )
            )
            if artifact_path:
                build.artifact_path = artifact_path
                build.triton_model_name = triton_name
            audit.record(session, "worker", f"build.{status}", f"build/{build_id}", error=error)
